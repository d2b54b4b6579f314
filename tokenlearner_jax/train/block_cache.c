/* A malloc front end, loaded with LD_PRELOAD, that keeps large blocks when they are freed and hands them
 * out again: XLA's CPU runtime mallocs a program's temporary buffer (2.7 GB for ViT-B/16's train step at
 * batch 16) at every call and frees it after, and its kernels malloc scratch blocks of tens to hundreds of
 * MB inside the call (YNNPACK's fusions, Eigen's convolutions); glibc maps a block that large afresh each
 * time, so every step faulted it in again and the kernel zeroed it again (train/allocator.py says more).
 *
 * Blocks of BLOCK_CACHE_MIN_BYTES or more (the size from which glibc always maps a block on its own and
 * unmaps it when freed) are mapped here, asking for transparent huge pages. When one is freed it is kept,
 * up to KEPT_SLOTS of them; a large request gets the smallest kept block that can hold it and that it
 * needs at least half of, already in memory. What is mapped here, in use and kept together, never grows
 * past the most that was in use at once plus a sixty-fourth: a request that would pass it unmaps kept
 * blocks first, smallest first; a block freed with KEPT_SLOTS kept takes the smallest one's place if it
 * is larger. So a program that uses the same few sizes at every call maps nothing after its first call,
 * and one that moves on to other sizes gives the old ones back. Everything smaller goes to glibc's own
 * functions.
 *
 * XLA frees the buffer on one of its threads just after the call's outputs are ready, so the next call
 * can ask for its buffer a few milliseconds before the last one is freed; a request that finds a block of
 * its size still in use and none kept therefore waits up to WAIT_MS for it, and a block freed while
 * another that would serve the same requests is in use is unmapped rather than kept. Where the wait comes
 * to nothing, the program holds blocks of that size together (an argument and a temporary buffer of the
 * same size); from then on only a request that finds more of them in use than that waits, and only a free
 * that leaves more of them in use than that unmaps.
 *
 * tokenlearner_block_cache_release() unmaps the kept blocks, and any freed before the next large request
 * (the buffer of a call still running: allocator.release_free_memory calls it before a checkpoint);
 * tokenlearner_block_cache_stats() counts what happened to the large requests.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define BLOCK_CACHE_MIN_BYTES ((size_t)32 << 20)
#define HUGE_PAGE ((size_t)2 << 20)
#define MAX_ALIGNMENT ((size_t)4096) /* what a fresh mapping is aligned to */
#define LIVE_SLOTS 64
#define WAIT_MS 200
#define USUAL_SLOTS 16
#define KEPT_SLOTS 8

/* Blocks mapped here and in use; a slot holds NULL when free. Read without the lock by free(), which
 * only ever looks for a block its caller owns. */
static _Atomic(void *) live_start[LIVE_SLOTS];
static size_t live_size[LIVE_SLOTS];
/* Blocks freed and kept; a slot holds NULL when empty. */
static void *kept_start[KEPT_SLOTS];
static size_t kept_size[KEPT_SLOTS];
/* Bytes of the blocks in use, and the most of them in use at once so far. */
static size_t in_use_bytes, peak_in_use_bytes;
/* Sizes (rounded) whose wait timed out, the latest USUAL_SLOTS of them, and how many blocks that serve
 * them were in use then besides the one asked for. */
static size_t usual_size[USUAL_SLOTS];
static int usual_in_use[USUAL_SLOTS];
static int usual_next;
/* Set by tokenlearner_block_cache_release until the next large request: a block freed meanwhile is unmapped. */
static int releasing;
/* What tokenlearner_block_cache_stats reports: requests served by a kept block, by a fresh mapping,
 * waits for a block in use to be freed, and those that came to nothing. */
static long hits, misses, waits, timeouts;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t freed = PTHREAD_COND_INITIALIZER;

static size_t round_to_huge_page(size_t n) { return (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1); }

static int fits(size_t block, size_t wanted) { return block >= wanted && wanted >= block / 2; }

/* The slot of the smallest kept block that serves `wanted`, or -1. */
static int kept_that_fits(size_t wanted) {
  int best = -1;
  for (int i = 0; i < KEPT_SLOTS; i++)
    if (kept_start[i] && fits(kept_size[i], wanted) && (best < 0 || kept_size[i] < kept_size[best])) best = i;
  return best;
}

/* The slot of the smallest kept block, or -1 where none is kept. */
static int smallest_kept(void) {
  int smallest = -1;
  for (int i = 0; i < KEPT_SLOTS; i++)
    if (kept_start[i] && (smallest < 0 || kept_size[i] < kept_size[smallest])) smallest = i;
  return smallest;
}

static size_t kept_bytes(void) {
  size_t total = 0;
  for (int i = 0; i < KEPT_SLOTS; i++)
    if (kept_start[i]) total += kept_size[i];
  return total;
}

static int empty_kept_slot(void) {
  for (int i = 0; i < KEPT_SLOTS; i++)
    if (!kept_start[i]) return i;
  return -1;
}

static void unmap_kept(int slot) {
  munmap(kept_start[slot], kept_size[slot]);
  kept_start[slot] = NULL;
}

static int live_slot(const void *p) {
  for (int i = 0; i < LIVE_SLOTS; i++)
    if (atomic_load_explicit(&live_start[i], memory_order_acquire) == p) return i;
  return -1;
}

static int in_use_that_fit(size_t wanted) {
  int count = 0;
  for (int i = 0; i < LIVE_SLOTS; i++)
    if (atomic_load_explicit(&live_start[i], memory_order_relaxed) && fits(live_size[i], wanted)) count++;
  return count;
}

static int usual_slot(size_t wanted) {
  for (int i = 0; i < USUAL_SLOTS; i++)
    if (usual_size[i] == wanted) return i;
  return -1;
}

/* How many blocks that serve `wanted` the program holds in use together, besides one more. */
static int usually_in_use(size_t wanted) {
  int slot = usual_slot(wanted);
  return slot < 0 ? 0 : usual_in_use[slot];
}

static void wait_for_a_free(size_t wanted, int in_use) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += (long)WAIT_MS * 1000000L;
  until.tv_sec += until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  waits++;
  while (kept_that_fits(wanted) < 0) {
    if (pthread_cond_timedwait(&freed, &lock, &until) == ETIMEDOUT) {
      if (kept_that_fits(wanted) < 0) {
        timeouts++;
        int slot = usual_slot(wanted);
        if (slot < 0) {
          slot = usual_next;
          usual_next = (usual_next + 1) % USUAL_SLOTS;
        }
        usual_size[slot] = wanted;
        usual_in_use[slot] = in_use;
      }
      return;
    }
  }
}

/* A block of at least n bytes, NULL where none could be mapped; *reused says whether it was kept here
 * (and so holds old contents) rather than freshly mapped (zero-filled). */
static void *large_alloc(size_t n, int *reused) {
  size_t wanted = round_to_huge_page(n);
  void *block;
  size_t size;
  *reused = 0;
  pthread_mutex_lock(&lock);
  releasing = 0;
  if (kept_that_fits(wanted) < 0) {
    int in_use = in_use_that_fit(wanted);
    if (in_use > usually_in_use(wanted)) wait_for_a_free(wanted, in_use);
  }
  /* Looked for after the wait, which lets other threads take slots meanwhile. */
  int slot = live_slot(NULL);
  if (slot < 0) {
    pthread_mutex_unlock(&lock);
    return NULL;
  }
  int kept = kept_that_fits(wanted);
  if (kept >= 0) {
    block = kept_start[kept];
    size = kept_size[kept];
    kept_start[kept] = NULL;
    *reused = 1;
    hits++;
  } else {
    if (in_use_bytes + wanted > peak_in_use_bytes) peak_in_use_bytes = in_use_bytes + wanted;
    size_t bound = peak_in_use_bytes + peak_in_use_bytes / 64, held = in_use_bytes + wanted + kept_bytes();
    for (int smallest; held > bound && (smallest = smallest_kept()) >= 0;) {
      held -= kept_size[smallest];
      unmap_kept(smallest);
    }
    block = mmap(NULL, wanted, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) {
      pthread_mutex_unlock(&lock);
      return NULL;
    }
    madvise(block, wanted, MADV_HUGEPAGE);
    size = wanted;
    misses++;
  }
  in_use_bytes += size;
  if (in_use_bytes > peak_in_use_bytes) peak_in_use_bytes = in_use_bytes;
  live_size[slot] = size;
  atomic_store_explicit(&live_start[slot], block, memory_order_release);
  pthread_mutex_unlock(&lock);
  return block;
}

/* Frees p and returns 1 where it is a block mapped here; returns 0 otherwise. */
static int large_free(void *p) {
  int slot = live_slot(p);
  if (slot < 0) return 0;
  pthread_mutex_lock(&lock);
  size_t size = live_size[slot];
  atomic_store_explicit(&live_start[slot], NULL, memory_order_release);
  in_use_bytes -= size;
  /* Where more blocks like it are in use than usual, one was mapped by a request that did not wait long
   * enough for this one: keeping this one too would hold both in memory from now on. */
  int keep = !releasing && in_use_that_fit(size) <= usually_in_use(size);
  int kept = keep ? empty_kept_slot() : -1;
  if (keep && kept < 0) { /* every slot full: p takes the smallest one's place, if it is larger */
    int smallest = smallest_kept();
    if (kept_size[smallest] <= size) {
      unmap_kept(smallest);
      kept = smallest;
    }
  }
  if (kept < 0) {
    munmap(p, size);
  } else {
    kept_start[kept] = p;
    kept_size[kept] = size;
    pthread_cond_broadcast(&freed);
  }
  pthread_mutex_unlock(&lock);
  return 1;
}

void tokenlearner_block_cache_release(void) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < KEPT_SLOTS; i++)
    if (kept_start[i]) unmap_kept(i);
  releasing = 1;
  pthread_mutex_unlock(&lock);
}

/* out[0..3]: hits, misses, waits, timeouts so far. */
void tokenlearner_block_cache_stats(long out[4]) {
  pthread_mutex_lock(&lock);
  out[0] = hits;
  out[1] = misses;
  out[2] = waits;
  out[3] = timeouts;
  pthread_mutex_unlock(&lock);
}

void *malloc(size_t n) {
  int reused;
  void *p = n >= BLOCK_CACHE_MIN_BYTES ? large_alloc(n, &reused) : NULL;
  return p ? p : __libc_malloc(n);
}

void free(void *p) {
  if (p && large_free(p)) return;
  __libc_free(p);
}

void *calloc(size_t count, size_t each) {
  size_t n;
  if (__builtin_mul_overflow(count, each, &n)) {
    errno = ENOMEM;
    return NULL;
  }
  int reused;
  void *p = n >= BLOCK_CACHE_MIN_BYTES ? large_alloc(n, &reused) : NULL;
  if (!p) return __libc_calloc(count, each);
  if (reused) memset(p, 0, n);
  return p;
}

void *memalign(size_t alignment, size_t n) {
  int reused;
  void *p = n >= BLOCK_CACHE_MIN_BYTES && alignment <= MAX_ALIGNMENT ? large_alloc(n, &reused) : NULL;
  return p ? p : __libc_memalign(alignment, n);
}

int posix_memalign(void **out, size_t alignment, size_t n) {
  if (alignment % sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
  void *p = memalign(alignment, n);
  if (!p && n) return ENOMEM;
  *out = p;
  return 0;
}

void *aligned_alloc(size_t alignment, size_t n) { return memalign(alignment, n); }

void *valloc(size_t n) { return memalign((size_t)sysconf(_SC_PAGESIZE), n); }

size_t malloc_usable_size(void *p) {
  static size_t (*glibc_usable_size)(void *);
  int slot = p ? live_slot(p) : -1;
  if (slot >= 0) return live_size[slot];
  if (!glibc_usable_size) glibc_usable_size = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
  return glibc_usable_size(p);
}

void *realloc(void *p, size_t n) {
  int slot = p ? live_slot(p) : -1;
  if (slot < 0 && n < BLOCK_CACHE_MIN_BYTES) return __libc_realloc(p, n);
  size_t old = p ? malloc_usable_size(p) : 0;
  if (slot >= 0 && n <= old && n >= BLOCK_CACHE_MIN_BYTES) return p;
  void *q = malloc(n);
  if (!q) return NULL;
  if (p) {
    memcpy(q, p, old < n ? old : n);
    free(p);
  }
  return q;
}

/* A fork() while another thread holds the lock must not leave the child's copy locked. */
static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void install_fork_handlers(void) {
  pthread_atfork(before_fork, after_fork, after_fork);
}
