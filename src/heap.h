/* The allocator behind the memory budget (limits.memory_mb). Release builds link jemalloc: the
 * relay allocates and frees many small blocks per event (JSON trees, HTTP buffers), and glibc's
 * malloc spent about a third of the loop's time on them at 4,000 ev/s (_int_malloc,
 * malloc_consolidate, unlink_chunk). Sanitizer builds keep the C library's malloc, which ASan
 * replaces. Either way the relay asks the same two questions through this header. */
#ifndef CSR_HEAP_H
#define CSR_HEAP_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

/* Bytes handed out by malloc and not yet freed (not what the allocator keeps cached). */
uint64_t csr_heap_in_use(void);

/* What the calling thread has allocated minus what it has freed, in bytes, from counters the
 * allocator keeps per thread (jemalloc: two loads, where csr_heap_in_use() merges every arena's
 * statistics, ~5 us). A difference of two readings is what the thread added to the heap between
 * them. glibc: always 0. */
uint64_t csr_heap_thread_net(void);
/* Whether csr_heap_in_use() is cheap enough to call at will (jemalloc: a merge of counters), or
 * walks the heap (glibc: milliseconds on a busy heap). */
bool csr_heap_reads_cheaply(void);

/* Hands memory the allocator keeps but nobody uses back to the kernel. */
void csr_heap_release(void);
/* csr_heap_release() on libuv's threadpool, one at a time in the process (the heap is the
 * process's): a purge is an madvise per run of free pages, a few milliseconds on a heap of 100 MB
 * that the loop thread spent once a second at 10,000 ev/s. 0 when queued, UV_EBUSY while one
 * still runs, else uv_queue_work's error. */
int csr_heap_release_async(uv_loop_t *loop);
/* Purges queued by csr_heap_release_async() that have finished, for tests. */
uint64_t csr_heap_releases_done(void);

/* Resident bytes of the whole process (/proc/self/statm); 0 when unknown. */
uint64_t csr_resident_bytes(void);

/* Moves the allocator's return of unused pages to the kernel off the calling thread (jemalloc's
 * background_thread, which Redis turns on the same way). On the loop thread that purging came in
 * bursts of madvise calls, each flushing the TLB of the other core, at the front of every second's
 * burst of Search pages. Returns whether it is on (glibc: never). */
bool csr_heap_purge_in_background(void);

/* "jemalloc" or "glibc", for /v1/status and the start-up log. */
const char *csr_heap_allocator(void);

#endif
