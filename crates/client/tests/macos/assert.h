/* CI check only (see TargetConditionals.h): assert for ring's C code, checked never linked. */
#define assert(x) ((void)(x))
