#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
typedef void (*sg)(int,int,int,int,int,int,float,const float*,int,const float*,int,float,float*,int);
static void dgemm(int a,int b,int c,int d,int e,int f,float g,const float*h,int i,const float*j,int k,float l,float*m,int n){fprintf(stderr,"real sgemm called\n");abort();}
static void dgemv(int a,int b,int c,int d,float e,const float*f,int g,const float*h,int i,float j,float*k,int l){fprintf(stderr,"real sgemv called\n");abort();}
static unsigned long long s=88172645463325252ULL; static unsigned r(void){s^=s<<13;s^=s>>7;s^=s<<17;return (unsigned)s;}
int main(int argc,char**argv){
  void*h=dlopen(argv[1],RTLD_NOW|RTLD_GLOBAL); if(!h){puts(dlerror());return 2;}
  ((void(*)(void*,void*))dlsym(h,"mlx_interp_gemv_shim_init"))((void*)dgemm,(void*)dgemv);
  ((void(*)(int))dlsym(h,"mlx_interp_gemv_shim_rows"))(8);
  sg gemm=(sg)dlsym(h,"cblas_sgemm");
  double secs=argc>2?atof(argv[2]):4; long iters=0,bad=0;
  struct timespec t0,t; clock_gettime(CLOCK_MONOTONIC,&t0);
  for(;;){
    clock_gettime(CLOCK_MONOTONIC,&t); if(t.tv_sec-t0.tv_sec+(t.tv_nsec-t0.tv_nsec)*1e-9>secs)break;
    int M=1+r()%8, N=2+r()%5000, K=1+r()%700; if(r()%3==0) K=64+r()%40;
    int lda=K+(r()%2?r()%9:0), ldw=K+(r()%2?r()%5:0), ldc=N+(r()%2?r()%7:0);
    float alpha=r()%2?2.0f:1.0f, beta=(r()%2)?0.5f:0.0f;
    int colmaj=r()%4==0;
    float*A=malloc(sizeof(float)*(size_t)M*lda),*W=malloc(sizeof(float)*(size_t)N*ldw),*C=malloc(sizeof(float)*(size_t)M*ldc),*C0=malloc(sizeof(float)*(size_t)M*ldc);
    for(size_t i=0;i<(size_t)M*lda;i++)A[i]=(float)((int)(r()%200)-100)/64;
    for(size_t i=0;i<(size_t)N*ldw;i++)W[i]=(float)((int)(r()%200)-100)/64;
    for(size_t i=0;i<(size_t)M*ldc;i++)C0[i]=C[i]=beta==0?NAN:(float)((int)(r()%200)-100)/8;
    if(!colmaj) gemm(101,111,112,M,N,K,alpha,A,lda,W,ldw,beta,C,ldc);
    else /* col-major: C^T(N x M, ld ldc) = W(N,K col? ) ... compute C (M,N) row-major as col-major C^T = W^T^T... */
      gemm(102,112,111,N,M,K,alpha,W,ldw,A,lda,beta,C,ldc);
    int b=0;
    for(int m=0;m<M&&!b;m++)for(int n=0;n<N;n++){double d=0;for(int k=0;k<K;k++)d+=(double)A[(size_t)m*lda+k]*W[(size_t)n*ldw+k];
      double e=alpha*d+(beta==0?0:beta*C0[(size_t)m*ldc+n]); double got=C[(size_t)m*ldc+n];
      if(!(fabs(got-e)<=1e-3*(1+fabs(e)))){printf("MISMATCH M=%d N=%d K=%d lda=%d ldw=%d ldc=%d a=%g b=%g cm=%d m=%d n=%d got=%g want=%g\n",M,N,K,lda,ldw,ldc,alpha,beta,colmaj,m,n,got,e);b=1;break;}}
    /* padding of C untouched */
    for(int m=0;m<M&&!b;m++)for(int n=N;n<ldc;n++){float g=C[(size_t)m*ldc+n],w=C0[(size_t)m*ldc+n];if(memcmp(&g,&w,4)){printf("PAD WRITTEN\n");b=1;break;}}
    bad+=b; iters++;
    free(A);free(W);free(C);free(C0);
  }
  printf("iters=%ld bad=%ld routed=%ld threads=%d\n",iters,bad,((long(*)(void))dlsym(h,"mlx_interp_gemv_shim_routed"))(),((int(*)(void))dlsym(h,"mlx_interp_gemv_shim_threads"))());
  return bad!=0;
}
