// Register-only cost of one quad of the 2-bit byte-value sum (Int8ValueKernels.SumChunk, head dim 64: four tokens x
// four query heads): one byte permute of the codes, three shifts and four masks, per head one two-source weight
// permute and four vpmaddubsw + vpaddw into int16 sums; and the same without the permutes (what a value layout stored
// ready for the sums, with weights broadcast from memory, could at best save). No loads: the floor of the instruction
// mix alone (README, Int8 attention, "Native port of the whole step"). Third: what 512-bit VNNI would give (vpdpbusd
// zmm, which .NET 10 does not expose: its AvxVnni is the 256-bit form) with the codes stored ready for it (byte 4 i + m
// of a quad's 64 bytes holding channels i, 16 + i, 32 + i, 48 + i of token m, so the three shifts and four masks alone
// split them) and each head's four byte weights broadcast from memory: sixteen vpdpbusd a quad into int32 sums.
// Build and run: gcc -O2 -march=native -o /tmp/value_quad_bound bench/native/value_quad_bound.c && /tmp/value_quad_bound
#include <stdio.h>
#include <time.h>

static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define QUAD \
 "vpermb %%zmm30, %%zmm29, %%zmm20\n\t" \
 "vpandd %%zmm28, %%zmm20, %%zmm21\n\t vpsrlw $2, %%zmm20, %%zmm22\n\t vpandd %%zmm28, %%zmm22, %%zmm22\n\t" \
 "vpsrlw $4, %%zmm20, %%zmm23\n\t vpandd %%zmm28, %%zmm23, %%zmm23\n\t vpsrlw $6, %%zmm20, %%zmm20\n\t vpandd %%zmm28, %%zmm20, %%zmm20\n\t" \
 W(0,"4","5","6","7") W(1,"8","9","10","11") W(2,"12","13","14","15") W(3,"16","17","18","19")
#define W(k,a,b,c,d) "vmovdqa64 %%zmm26, %%zmm24\n\t vpermt2b %%zmm27, %%zmm31, %%zmm24\n\t" \
 "vpmaddubsw %%zmm21, %%zmm24, %%zmm25\n\t vpaddw %%zmm25, %%zmm" a ", %%zmm" a "\n\t" \
 "vpmaddubsw %%zmm22, %%zmm24, %%zmm25\n\t vpaddw %%zmm25, %%zmm" b ", %%zmm" b "\n\t" \
 "vpmaddubsw %%zmm23, %%zmm24, %%zmm25\n\t vpaddw %%zmm25, %%zmm" c ", %%zmm" c "\n\t" \
 "vpmaddubsw %%zmm20, %%zmm24, %%zmm24\n\t vpaddw %%zmm24, %%zmm" d ", %%zmm" d "\n\t"
#define WNP(k,a,b,c,d) \
 "vpmaddubsw %%zmm21, %%zmm26, %%zmm25\n\t vpaddw %%zmm25, %%zmm" a ", %%zmm" a "\n\t" \
 "vpmaddubsw %%zmm22, %%zmm26, %%zmm25\n\t vpaddw %%zmm25, %%zmm" b ", %%zmm" b "\n\t" \
 "vpmaddubsw %%zmm23, %%zmm26, %%zmm25\n\t vpaddw %%zmm25, %%zmm" c ", %%zmm" c "\n\t" \
 "vpmaddubsw %%zmm20, %%zmm26, %%zmm24\n\t vpaddw %%zmm24, %%zmm" d ", %%zmm" d "\n\t"
#define QUADNP \
 "vmovdqa64 %%zmm30, %%zmm20\n\t" \
 "vpandd %%zmm28, %%zmm20, %%zmm21\n\t vpsrlw $2, %%zmm20, %%zmm22\n\t vpandd %%zmm28, %%zmm22, %%zmm22\n\t" \
 "vpsrlw $4, %%zmm20, %%zmm23\n\t vpandd %%zmm28, %%zmm23, %%zmm23\n\t vpsrlw $6, %%zmm20, %%zmm20\n\t vpandd %%zmm28, %%zmm20, %%zmm20\n\t" \
 WNP(0,"4","5","6","7") WNP(1,"8","9","10","11") WNP(2,"12","13","14","15") WNP(3,"16","17","18","19")
#define WV(k,a,b,c,d) \
 "vpdpbusd 4*" #k "(%0)%{1to16%}, %%zmm21, %%zmm" a "\n\t" \
 "vpdpbusd 4*" #k "(%0)%{1to16%}, %%zmm22, %%zmm" b "\n\t" \
 "vpdpbusd 4*" #k "(%0)%{1to16%}, %%zmm23, %%zmm" c "\n\t" \
 "vpdpbusd 4*" #k "(%0)%{1to16%}, %%zmm20, %%zmm" d "\n\t"
#define QUADV \
 "vmovdqa64 %%zmm30, %%zmm20\n\t" \
 "vpandd %%zmm28, %%zmm20, %%zmm21\n\t vpsrlw $2, %%zmm20, %%zmm22\n\t vpandd %%zmm28, %%zmm22, %%zmm22\n\t" \
 "vpsrlw $4, %%zmm20, %%zmm23\n\t vpandd %%zmm28, %%zmm23, %%zmm23\n\t vpsrlw $6, %%zmm20, %%zmm20\n\t vpandd %%zmm28, %%zmm20, %%zmm20\n\t" \
 WV(0,"4","5","6","7") WV(1,"8","9","10","11") WV(2,"12","13","14","15") WV(3,"16","17","18","19")
#define CLOB "xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13","xmm14","xmm15","xmm16","xmm17","xmm18","xmm19","xmm20","xmm21","xmm22","xmm23","xmm24","xmm25"
// The clock: four dependent scalar adds an iteration (one cycle each).
static double clock_ghz(void) {
  long x = 0, n = 200000000;
  double t0 = now();
  for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
  return 4.0 * n / (now() - t0) / 1e9;
}

int main(){
  double ghz = clock_ghz();
  printf("clock about %.2f GHz (dependent scalar adds)\n", ghz);
  __asm__ volatile("vpternlogd $0xff,%%zmm28,%%zmm28,%%zmm28\n\t vpsrlw $14,%%zmm28,%%zmm28\n\t vpxord %%zmm29,%%zmm29,%%zmm29\n\t vpxord %%zmm30,%%zmm30,%%zmm30\n\t vpxord %%zmm26,%%zmm26,%%zmm26\n\t vpxord %%zmm27,%%zmm27,%%zmm27\n\t vpxord %%zmm31,%%zmm31,%%zmm31":::"xmm26","xmm27","xmm28","xmm29","xmm30","xmm31");
  static int wts[4] __attribute__((aligned(64))) = {0x01020304,0x05060708,0x090a0b0c,0x0d0e0f10};
  for(int v=0;v<3;v++){
  double best=1e9; long n=20000000;
  for(int r=0;r<5;r++){ double t0=now(); for(long i=0;i<n;i++){ if(v==0) __asm__ volatile(QUAD ::: CLOB); else if(v==1) __asm__ volatile(QUADNP ::: CLOB); else __asm__ volatile(QUADV :: "r"(wts) : CLOB);} double t=now()-t0; if(t<best)best=t; }
  printf("%-32s %.2f ns a quad (best of five), %.1f cycles at the clock measured above\n", v==0?"SumChunk quad (with permutes):":v==1?"without the permutes:":"vpdpbusd zmm, layout ready:", best*1e9/n, best*1e9/n*ghz);
  }
}
