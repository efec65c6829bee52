/* Force-included (-include) into every file of the linux-x64 glibc prebuild (scripts/prebuild-linux.sh).
 * glibc 2.29 gave exp, log, log2 and pow new symbol versions (faster code, errno set without the SVID
 * wrapper); binding to the old GLIBC_2.2.5 ones, which every glibc still exports, keeps the prebuild
 * loadable on glibc 2.28 (RHEL 8). Results are the same: only the error-handling wrapper differs. */
#if defined(__linux__) && defined(__x86_64__)
__asm__(".symver exp,exp@GLIBC_2.2.5");
__asm__(".symver log,log@GLIBC_2.2.5");
__asm__(".symver log2,log2@GLIBC_2.2.5");
__asm__(".symver pow,pow@GLIBC_2.2.5");
#endif
