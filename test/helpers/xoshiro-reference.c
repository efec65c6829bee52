/*
 * Reference outputs for src/samplers.ts's SeededRandom, written from the published descriptions, not
 * from our TypeScript:
 *   - xoshiro128** 1.1, D. Blackman and S. Vigna, https://prng.di.unimi.it/xoshiro128starstar.c
 *     (checked below against the outputs of that reference for the state {1, 2, 3, 4}, as quoted by
 *     rust-random/rngs rand_xoshiro/src/xoshiro128starstar.rs, test `reference`).
 *   - seeding: splitmix32 = a Weyl step of 0x9e3779b9 followed by MurmurHash3's fmix32 finaliser
 *     (A. Appleby); the generator state is four consecutive outputs, the splitmix state starting at
 *     (high 32 bits of the seed) ^ ((stream + 1) * 0x632be5ab) ^ (low 32 bits of the seed), as
 *     documented in src/samplers.ts.
 *   - doubles in [0, 1): ((a >> 5) * 2^26 + (b >> 6)) / 2^53 from two consecutive 32-bit outputs
 *     (M. Matsumoto and T. Nishimura's genrand_res53, mt19937ar.c).
 * Build and run: cc -std=c99 -O1 -o xoshiro-reference xoshiro-reference.c && ./xoshiro-reference
 * It prints one JSON object; test/samplers.test.ts embeds it and re-runs this program when a C compiler
 * is present. Exits 1 if the published xoshiro128** vector does not come out.
 */
#include <stdint.h>
#include <stdio.h>

static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static uint32_t xoshiro128starstar_next(uint32_t s[4]) {
  const uint32_t result = rotl(s[1] * 5, 7) * 9;
  const uint32_t t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return result;
}

static uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

static uint32_t splitmix32_next(uint32_t *state) {
  *state += 0x9e3779b9u;
  return fmix32(*state);
}

static void seed_state(uint64_t seed, uint32_t stream, uint32_t s[4]) {
  uint32_t state = (uint32_t)(seed >> 32) ^ ((stream + 1u) * 0x632be5abu) ^ (uint32_t)seed;
  for (int i = 0; i < 4; i++) s[i] = splitmix32_next(&state);
  if ((s[0] | s[1] | s[2] | s[3]) == 0) s[0] = 1;
}

static double next_double(uint32_t s[4]) {
  const uint32_t a = xoshiro128starstar_next(s) >> 5;
  const uint32_t b = xoshiro128starstar_next(s) >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

int main(void) {
  static const uint32_t published[10] = {11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034,
                                         3734860849u, 3729100597u, 4258142804u};
  uint32_t s[4] = {1, 2, 3, 4};
  for (int i = 0; i < 10; i++) {
    if (xoshiro128starstar_next(s) != published[i]) {
      fprintf(stderr, "xoshiro128** output %d differs from the published reference\n", i);
      return 1;
    }
  }

  /* (seed, stream) pairs: zero, small, the 2^32 boundary, above 2^32, the largest safe integer, rows > 0. */
  static const uint64_t seeds[] = {0, 1, 42, 4294967295u, 4294967296u, 1099511627781u /* 2^40 + 5 */,
                                   9007199254740991u /* 2^53 - 1 */};
  static const uint32_t streams[] = {0, 1, 3};
  printf("{\"uint32\": [");
  int first = 1;
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    for (size_t j = 0; j < sizeof streams / sizeof streams[0]; j++) {
      seed_state(seeds[i], streams[j], s);
      printf("%s\n  {\"seed\": %llu, \"stream\": %u, \"values\": [", first ? "" : ",", (unsigned long long)seeds[i], streams[j]);
      for (int n = 0; n < 8; n++) printf("%s%u", n ? ", " : "", xoshiro128starstar_next(s));
      printf("]}");
      first = 0;
    }
  }
  /* Doubles for the seeds the sampler tests use (3 and 4 drive generate's samplers), rows 0 to 2. */
  static const uint64_t double_seeds[] = {0, 1, 3, 4, 42, 1099511627781u, 9007199254740991u};
  printf("\n], \"double\": [");
  first = 1;
  for (size_t i = 0; i < sizeof double_seeds / sizeof double_seeds[0]; i++) {
    for (uint32_t stream = 0; stream < 3; stream++) {
      seed_state(double_seeds[i], stream, s);
      printf("%s\n  {\"seed\": %llu, \"stream\": %u, \"values\": [", first ? "" : ",", (unsigned long long)double_seeds[i], stream);
      for (int n = 0; n < 16; n++) printf("%s%.17g", n ? ", " : "", next_double(s));
      printf("]}");
      first = 0;
    }
  }
  printf("\n]}\n");
  return 0;
}
