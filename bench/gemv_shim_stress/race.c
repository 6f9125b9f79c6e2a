#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
typedef void (*sg)(int,int,int,int,int,int,float,const float*,int,const float*,int,float,float*,int);
static unsigned long long s=88172645463325252ULL; static unsigned r(void){s^=s<<13;s^=s>>7;s^=s<<17;return (unsigned)s;}
enum{S=4};
int main(int argc,char**argv){
  void*h=dlopen(argv[1],RTLD_NOW|RTLD_GLOBAL); if(!h){puts(dlerror());return 2;}
  ((void(*)(void*,void*))dlsym(h,"mlx_interp_gemv_shim_init"))(0,0);
  ((void(*)(int))dlsym(h,"mlx_interp_gemv_shim_rows"))(8);
  sg gemm=(sg)dlsym(h,"cblas_sgemm");
  int Ns[S]={896,1152,4864,300}, Ks[S]={256,96,128,256}; float beta[S]={0,0.5f,0,0.5f};
  float *A[S],*W[S],*C[S],*C0[S],*R[S]; int M=4;
  for(int i=0;i<S;i++){int N=Ns[i],K=Ks[i];A[i]=malloc(4*M*K);W[i]=malloc(4*(size_t)N*K);C[i]=malloc(4*M*N);C0[i]=malloc(4*M*N);R[i]=malloc(4*M*N);
    for(int j=0;j<M*K;j++)A[i][j]=(int)(r()%200-100)/64.f; for(int j=0;j<N*K;j++)W[i][j]=(int)(r()%200-100)/64.f; for(int j=0;j<M*N;j++)C0[i][j]=(int)(r()%200-100)/8.f;
    for(int m=0;m<M;m++)for(int n=0;n<N;n++){double d=0;for(int k=0;k<K;k++)d+=(double)A[i][m*K+k]*W[i][n*K+k];R[i][m*N+n]=d+beta[i]*C0[i][m*N+n];}}
  double secs=atof(argv[2]); long it=0,bad=0; struct timespec t0,t; clock_gettime(CLOCK_MONOTONIC,&t0);
  for(;;){ if((it&255)==0){clock_gettime(CLOCK_MONOTONIC,&t); if(t.tv_sec-t0.tv_sec+(t.tv_nsec-t0.tv_nsec)*1e-9>secs)break;}
    int i=r()%S,N=Ns[i],K=Ks[i]; memcpy(C[i],C0[i],4*M*N);
    gemm(101,111,112,M,N,K,1.0f,A[i],K,W[i],K,beta[i],C[i],N);
    for(int j=0;j<M*N;j++) if(fabsf(C[i][j]-R[i][j])>1e-3f*(1+fabsf(R[i][j]))){ if(bad<5)printf("bad it=%ld shape=%d j=%d got=%g want=%g\n",it,i,j,C[i][j],R[i][j]); bad++; break;}
    it++; }
  printf("iters=%ld bad=%ld\n",it,bad); return bad!=0; }
