#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
static _Atomic int flag __attribute__((aligned(64)));
static int N;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void* pong(void*a){pin(1);for(int i=0;i<N;i++){while(atomic_load_explicit(&flag,memory_order_acquire)!=1);atomic_store_explicit(&flag,0,memory_order_release);}return 0;}
int main(int c,char**v){N=atoi(v[1]);pthread_t t;pin(0);pthread_create(&t,0,pong,0);
struct timespec a,b;clock_gettime(CLOCK_MONOTONIC,&a);
for(int i=0;i<N;i++){atomic_store_explicit(&flag,1,memory_order_release);while(atomic_load_explicit(&flag,memory_order_acquire)!=0);}
clock_gettime(CLOCK_MONOTONIC,&b);pthread_join(t,0);
printf("%.1f\n",((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N);}
