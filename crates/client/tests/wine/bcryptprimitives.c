/* Test set-up only, never shipped: Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng
 * Rust's standard library (1.78 and later) calls for random bytes on Windows. This stand-in,
 * put beside ferry.exe under Wine, answers it from RtlGenRandom (advapi32's SystemFunction036).
 * Built by tests/wine.rs with: x86_64-w64-mingw32-gcc -shared -o bcryptprimitives.dll
 *   bcryptprimitives.c -ladvapi32 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
