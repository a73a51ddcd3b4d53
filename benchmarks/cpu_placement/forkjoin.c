#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
// main + one spinning worker, fork-join of small chunks (like a parallel-for per operator):
// per "inference" 10 ops, each op: main publishes gen, both do `work` iterations, main waits for worker.
static _Atomic long gen __attribute__((aligned(64)));
static _Atomic long done __attribute__((aligned(64)));
static volatile double sink[16] __attribute__((aligned(64)));
static int WORK;
static double spin_work(int n, double x){for(int i=0;i<n;i++) x = x*1.0000001+0.5; return x;}
static void pin(int c){if(c<0)return;cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void* worker(void*a){pin(1);long seen=0;for(;;){long g;while((g=atomic_load_explicit(&gen,memory_order_acquire))==seen) __builtin_ia32_pause(); if(g<0)return 0; seen=g; sink[8]=spin_work(WORK,1.0); atomic_store_explicit(&done,g,memory_order_release);}}
static long now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000L+t.tv_nsec;}
static int cmp(const void*a,const void*b){long x=*(long*)a,y=*(long*)b;return (x>y)-(x<y);}
int main(int c,char**v){WORK=atoi(v[1]);int pinmain=atoi(v[2]);pin(pinmain);pthread_t t;pthread_create(&t,0,worker,0);
 int N=200000; long*ts=malloc(N*sizeof(long)); long g=0; int n=0; long end=now()+1500000000L;
 while(n<N && now()<end){long a=now(); for(int op=0;op<10;op++){g++;atomic_store_explicit(&gen,g,memory_order_release); sink[0]=spin_work(WORK,2.0); while(atomic_load_explicit(&done,memory_order_acquire)!=g) __builtin_ia32_pause();} ts[n++]=now()-a;}
 atomic_store(&gen,-1);pthread_join(t,0);qsort(ts,n,sizeof(long),cmp);printf("%.2f\n",ts[n/2]/1000.0);}
