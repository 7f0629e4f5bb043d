/* kernel-floor: what one small write per delivery costs on loopback TCP,
 * with no relay at all. It opens CONNS loopback connections; a reader
 * thread drains their far ends with epoll (as the load generator does); the
 * main thread writes SIZE-byte frames to them round-robin, BATCH frames per
 * socket per writev, WRITES frames in all, and prints the writing thread's
 * CPU time per frame. On loopback the receiving side's TCP work runs in the
 * sender's system call, so this is the floor of "server CPU per delivery"
 * for a server that writes each delivery on its own (BATCH=1).
 *
 *   cc -O2 -pthread -o kernel-floor kernel-floor.c
 *   ./kernel-floor CONNS WRITES SIZE BATCH      e.g. ./kernel-floor 1000 400000 250 1
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int conns, batch;
static int *readers;
static volatile long received;
static volatile int done;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double cpu_seconds(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void *drain(void *arg) {
  (void)arg;
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < conns; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = readers[i]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, readers[i], &ev) < 0) die("epoll_ctl");
  }
  static char buf[65536];
  struct epoll_event events[256];
  while (!done) {
    int n = epoll_wait(ep, events, 256, 100);
    for (int i = 0; i < n; i++) {
      ssize_t got;
      while ((got = recv(events[i].data.fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) received += got;
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s CONNS WRITES SIZE BATCH\n", argv[0]);
    return 2;
  }
  conns = atoi(argv[1]);
  long writes = atol(argv[2]);
  int size = atoi(argv[3]);
  batch = atoi(argv[4]);
  if (conns < 1 || writes < 1 || size < 1 || batch < 1 || batch > 64) return 2;

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(listener, 4096) < 0) die("listen");
  if (getsockname(listener, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
  int *writers = calloc(conns, sizeof *writers);
  readers = calloc(conns, sizeof *readers);
  int one = 1;
  for (int i = 0; i < conns; i++) {
    readers[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(readers[i], (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    writers[i] = accept(listener, NULL, NULL);
    if (writers[i] < 0) die("accept");
    /* As the relay's sockets: Nagle off. */
    setsockopt(writers[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  pthread_t reader;
  pthread_create(&reader, NULL, drain, NULL);

  char *frame = malloc(size);
  memset(frame, 'x', size);
  struct iovec iov[64];
  for (int i = 0; i < batch; i++) iov[i] = (struct iovec){.iov_base = frame, .iov_len = size};
  double start = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
  struct timespec wall0, wall1;
  clock_gettime(CLOCK_MONOTONIC, &wall0);
  long written = 0;
  for (int c = 0; written < writes; c = (c + 1) % conns) {
    ssize_t n = writev(writers[c], iov, batch);
    if (n < 0) die("writev"); /* blocking sockets: every frame goes, or an error */
    written += batch;
  }
  double cpu = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - start;
  clock_gettime(CLOCK_MONOTONIC, &wall1);
  while (received < (long)written * size) usleep(1000);
  done = 1;
  pthread_join(reader, NULL);
  double wall = (wall1.tv_sec - wall0.tv_sec) + (wall1.tv_nsec - wall0.tv_nsec) / 1e9;
  printf("{\"conns\":%d,\"frames\":%ld,\"size\":%d,\"batch\":%d,\"writer_cpu_us_per_frame\":%.2f,\"frames_per_s\":%.0f}\n",
         conns, written, size, batch, cpu * 1e6 / written, written / wall);
  return 0;
}
