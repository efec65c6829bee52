/* Force-included (-include) into every file of the linux glibc prebuilds (scripts/prebuild-linux.sh).
 * glibc 2.29 gave exp, log, log2 and pow new symbol versions (faster code, errno set without the SVID
 * wrapper); binding to the old ones (GLIBC_2.2.5 on x64, GLIBC_2.17 on arm64), which every glibc still
 * exports, keeps the prebuilds loadable on glibc 2.28 (RHEL 8) and, on arm64, on any glibc that runs
 * arm64 (2.17 on). Results are the same: only the error-handling wrapper differs. */
#if defined(__linux__) && defined(__x86_64__)
__asm__(".symver exp,exp@GLIBC_2.2.5");
__asm__(".symver log,log@GLIBC_2.2.5");
__asm__(".symver log2,log2@GLIBC_2.2.5");
__asm__(".symver pow,pow@GLIBC_2.2.5");
#endif
#if defined(__linux__) && defined(__aarch64__)
__asm__(".symver exp,exp@GLIBC_2.17");
__asm__(".symver log,log@GLIBC_2.17");
__asm__(".symver log2,log2@GLIBC_2.17");
__asm__(".symver pow,pow@GLIBC_2.17");
/* glibc 2.27 did the same for expf (the only float one of them the addon calls). */
__asm__(".symver expf,expf@GLIBC_2.17");
#endif
