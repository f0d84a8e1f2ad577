/* CI check only (see TargetConditionals.h): what ring's C code uses of string.h. */
#include <stddef.h>
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
