/* CI check only, never used to build a release: the one macOS SDK header ring's C code asks
 * for, so that `cargo check --target x86_64-apple-darwin -p ferry-client` runs on Linux with
 * clang (-ffreestanding). The C objects it makes are never linked. */
#ifndef FERRY_CHECK_TARGET_CONDITIONALS_H
#define FERRY_CHECK_TARGET_CONDITIONALS_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_SIMULATOR 0
#endif
