/* pagewise's C API: the library from C (C11) and from any language with a C
 * FFI (bindings/rust, bindings/python use it). Plain C: no C++ types; every
 * object is an opaque handle. Manual pages: libpagewise(3) and one page per
 * function group (pagewise_tracker_create(3), ...).
 *
 * ERRORS. One convention everywhere, liburing's: a function that can fail
 * returns int, 0 (or a non-negative count) on success and a negative errno
 * value on failure; handles come back through an out-parameter. The errno
 * values stand for pagewise's error codes, one each:
 *   -EINVAL      invalid argument (fix the call)
 *   -EOPNOTSUPP  the kernel or the build lacks a feature (never an I/O error)
 *   -EPERM       privileges or sysctl settings
 *   -ENOENT      a file, region or name that does not exist
 *   -EEXIST      already exists (a range tracked twice, a page present)
 *   -EAGAIN      transient; the message says what to do first
 *   -ETIMEDOUT   a wait ran out of time
 *   -ENOMEM      out of memory or another resource
 *   -ENOSPC      the disk is full
 *   -EIO         any other failing system call or I/O
 *   -EBADMSG     data read back is not what was written (image checksums)
 *   -EPIPE       the peer process (page server, client) is gone
 *   -EBUSY       the object is in the wrong state for the call
 *   -ENOTRECOVERABLE  a pagewise bug: please report it
 * pagewise_errmsg() then returns the failure's message (what failed, where,
 * and what to do), for the calling thread, until its next failing call.
 *
 * OWNERSHIP. Handles made by *_create/_open/_start/_connect are owned by the
 * caller and released by the matching *_destroy/_close (NULL is accepted and
 * ignored). Strings and arrays a handle returns are owned by the handle and
 * valid as stated per function. Strings and arrays the caller passes in are
 * borrowed for the duration of the call only, unless stated otherwise. Nothing
 * returned needs free() by the caller.
 *
 * THREADS. Functions on distinct handles may run concurrently. A handle is used
 * by one thread at a time unless its section says otherwise. pagewise_errmsg()
 * is per thread. Durations are int64 nanoseconds; PAGEWISE_NO_TIMEOUT (-1)
 * waits without limit.
 *
 * ABI. Exported symbols carry the version node PAGEWISE_0.1
 * (src/pagewise.map); structs passed in are only ever extended at the end in
 * a new release, together with a new SONAME while the major version is 0. */
#ifndef PAGEWISE_PAGEWISE_H_
#define PAGEWISE_PAGEWISE_H_

#include <stddef.h>
#include <stdint.h>

#include "pagewise/export.h"
#include "pagewise/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PAGEWISE_NO_TIMEOUT ((int64_t)-1)

/* ---- library --------------------------------------------------------------- */

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). */
PAGEWISE_EXPORT const char* pagewise_version(void);
/* The message of this thread's last failure ("" if none): valid until this
 * thread's next failing pagewise call. Never NULL. */
PAGEWISE_EXPORT const char* pagewise_errmsg(void);

/* ---- probe: what this kernel offers ----------------------------------------- */

typedef enum pagewise_backend {
  PAGEWISE_BACKEND_AUTO = 0, /* the best atomic backend available */
  PAGEWISE_BACKEND_UFFD_WP_ASYNC = 1,
  PAGEWISE_BACKEND_UFFD_WP = 2,
  PAGEWISE_BACKEND_MPROTECT = 3, /* needs libpagewise-interpose linked or preloaded */
  PAGEWISE_BACKEND_SOFT_DIRTY = 4
} pagewise_backend;

typedef struct pagewise_features {
  char kernel_release[65]; /* uname -r */
  int uffd_available;      /* userfaultfd usable (syscall or /dev/userfaultfd) */
  uint64_t uffd_features;  /* UFFD_FEATURE_* bits UFFDIO_API granted */
  uint64_t uffd_ioctls;    /* UFFDIO_* ioctl bits */
  int pagemap_scan;        /* the PAGEMAP_SCAN ioctl works */
  int soft_dirty;          /* soft-dirty bits really set on a write */
  uint64_t thp_size;       /* PMD-sized transparent huge page, bytes (0: none) */
} pagewise_features;

/* Fills *out from the process-wide probe (run once). Never fails: returns 0. */
PAGEWISE_EXPORT int pagewise_probe(pagewise_features* out);
/* Whether `backend` (not AUTO) can be created in this process: 1 or 0, with
 * *reason (if not NULL) set to why not, or to what it cannot guarantee
 * (static storage, "" if nothing). -EINVAL for an unknown backend. */
PAGEWISE_EXPORT int pagewise_backend_available(pagewise_backend backend, const char** reason);
/* "auto", "uffd-wp-async", ...; "unknown" for other values (static storage). */
PAGEWISE_EXPORT const char* pagewise_backend_name(pagewise_backend backend);

/* ---- regions of memory -------------------------------------------------------- */

typedef enum pagewise_region_kind {
  PAGEWISE_REGION_ANONYMOUS = 0, /* private anonymous memory */
  PAGEWISE_REGION_SHARED = 1,    /* memfd / shmem, MAP_SHARED */
  PAGEWISE_REGION_FILE = 2,      /* a file-backed mapping */
  PAGEWISE_REGION_FLAT = 3       /* imported from a flat memory file */
} pagewise_region_kind;

/* One region: `length` bytes at `address` in memory, at byte `offset` of a
 * source's flat view (the regions of an image, in order). */
typedef struct pagewise_region {
  uint64_t address;
  uint64_t length;    /* a multiple of page_size */
  uint64_t offset;    /* byte offset in the flat view */
  uint32_t page_size; /* bytes; 0 in input: the system page size */
  uint32_t prot;      /* PROT_* bits */
  pagewise_region_kind kind;
  const char* name; /* may be NULL; see the function for who owns it */
} pagewise_region;

/* Describes [addr, addr + len) of this process from /proc/self/maps (kind,
 * protection, page size). *out's name is NULL. -EINVAL if the range is not
 * page aligned or not wholly mapped. */
PAGEWISE_EXPORT int pagewise_region_of(const void* addr, size_t len, pagewise_region* out);

/* [start, end) in bytes, page aligned. */
typedef struct pagewise_range {
  uint64_t start;
  uint64_t end;
} pagewise_range;

/* ---- tracker: which pages were written since I last asked ------------------ */
/* Thread safety: track/untrack/collect may be called from any thread (they
 * serialise); the program's threads write to tracked memory freely. */

typedef struct pagewise_tracker pagewise_tracker;

PAGEWISE_EXPORT int pagewise_tracker_create(pagewise_backend backend, pagewise_tracker** out);
PAGEWISE_EXPORT void pagewise_tracker_destroy(pagewise_tracker* tracker);
PAGEWISE_EXPORT pagewise_backend pagewise_tracker_backend(const pagewise_tracker* tracker);
/* Starts tracking [addr, addr + len) (page aligned, mapped, not tracked). */
PAGEWISE_EXPORT int pagewise_tracker_track(pagewise_tracker* tracker, void* addr, size_t len);
/* Stops tracking exactly a range given to track (-ENOENT otherwise). */
PAGEWISE_EXPORT int pagewise_tracker_untrack(pagewise_tracker* tracker, void* addr, size_t len);
/* The pages written since the previous collect (or track), sorted and
 * coalesced, re-armed atomically per page: *ranges points at *count ranges
 * owned by the tracker, valid until its next collect or destroy. Returns 0.
 * On failure the ranges collected so far are still returned, and nothing is
 * lost: pages not reported are reported by the next collect. */
PAGEWISE_EXPORT int pagewise_tracker_collect(pagewise_tracker* tracker,
                                             const pagewise_range** ranges, size_t* count);

/* ---- checkpoint: rewind memory in place ------------------------------------- */

typedef struct pagewise_checkpoint pagewise_checkpoint;

typedef struct pagewise_rewind_stats {
  uint64_t pages_restored; /* pages reported written and put back */
  uint64_t pages_copied;   /* ... of which copied from the saved copy */
  uint64_t pages_zeroed;   /* ... of which zero at the checkpoint */
  int64_t duration_ns;     /* wall time of the rewind */
} pagewise_rewind_stats;

/* Saves the contents of `regions` (memory of this process; only address and
 * length are read) and tracks them with `backend`. */
PAGEWISE_EXPORT int pagewise_checkpoint_create(const pagewise_region* regions, size_t count,
                                               pagewise_backend backend, pagewise_checkpoint** out);
PAGEWISE_EXPORT void pagewise_checkpoint_destroy(pagewise_checkpoint* checkpoint);
/* Puts back every page written since the checkpoint (or the last rewind or
 * update); *stats may be NULL. */
PAGEWISE_EXPORT int pagewise_checkpoint_rewind(pagewise_checkpoint* checkpoint,
                                               pagewise_rewind_stats* stats);
/* Makes the current contents the checkpoint; returns the pages saved anew. */
PAGEWISE_EXPORT int64_t pagewise_checkpoint_update(pagewise_checkpoint* checkpoint);

/* ---- snapshots: memory into image files ------------------------------------ */

typedef enum pagewise_compression {
  PAGEWISE_COMPRESSION_NONE = 0,
  PAGEWISE_COMPRESSION_ZSTD = 1,
  PAGEWISE_COMPRESSION_LZ4 = 2
} pagewise_compression;

typedef struct pagewise_snapshot_options {
  pagewise_compression compression; /* options NULL: zstd */
  int level;                        /* zstd level; 0: 1 */
  int threads;                      /* compression threads; 0: 1 */
} pagewise_snapshot_options;

typedef struct pagewise_snapshot_stats {
  uint64_t pages;        /* pages recorded in the image */
  uint64_t zero_pages;   /* of which all zero (no data stored) */
  uint64_t stored_pages; /* distinct non-zero pages stored */
  uint64_t file_bytes;   /* the image file's size */
  int64_t duration_ns;
} pagewise_snapshot_stats;

/* Writes `regions` (memory of this process; names borrowed) to a new base
 * image at `path`, atomically. options and stats may be NULL. */
PAGEWISE_EXPORT int pagewise_snapshot_full(const pagewise_region* regions, size_t count,
                                           const char* path,
                                           const pagewise_snapshot_options* options,
                                           pagewise_snapshot_stats* stats);
/* Writes the `written` ranges (from a tracker) of `regions` as a layer on top
 * of the image `parent`, at `path`. */
PAGEWISE_EXPORT int pagewise_snapshot_incremental(const pagewise_range* written,
                                                  size_t written_count,
                                                  const pagewise_region* regions, size_t count,
                                                  const char* parent, const char* path,
                                                  const pagewise_snapshot_options* options,
                                                  pagewise_snapshot_stats* stats);
/* A live snapshot: `regions` are saved to `path` as they were at the call,
 * while the program's threads keep writing (each page is copied before its
 * first write; no fork). Returns when the image is committed. */
PAGEWISE_EXPORT int pagewise_snapshot_live(const pagewise_region* regions, size_t count,
                                           const char* path,
                                           const pagewise_snapshot_options* options,
                                           pagewise_snapshot_stats* stats);

/* ---- images: open, read, verify --------------------------------------------- */
/* Thread safety: an open image may be read from several threads at once. */

typedef struct pagewise_image pagewise_image;

/* Opens the chain whose top layer is `path` (checks headers and indexes). */
PAGEWISE_EXPORT int pagewise_image_open(const char* path, pagewise_image** out);
PAGEWISE_EXPORT void pagewise_image_close(pagewise_image* image);
PAGEWISE_EXPORT size_t pagewise_image_region_count(const pagewise_image* image);
/* Region `index`; its name is owned by the image (valid until close). */
PAGEWISE_EXPORT int pagewise_image_region(const pagewise_image* image, size_t index,
                                          pagewise_region* out);
PAGEWISE_EXPORT size_t pagewise_image_layer_count(const pagewise_image* image);
/* Bytes of the flat view (the regions in order). */
PAGEWISE_EXPORT uint64_t pagewise_image_flat_size(const pagewise_image* image);
/* Reads len bytes at `offset` of region `region` (checksums checked). */
PAGEWISE_EXPORT int pagewise_image_read(const pagewise_image* image, uint32_t region,
                                        uint64_t offset, void* dst, size_t len);
/* Reads len bytes at `offset` of the flat view. */
PAGEWISE_EXPORT int pagewise_image_read_flat(const pagewise_image* image, uint64_t offset,
                                             void* dst, size_t len);
/* Reads and checks every page of every layer: 0, or -EBADMSG naming the
 * first damage (layer, region, offset) in the message. */
PAGEWISE_EXPORT int pagewise_image_verify(const pagewise_image* image);

/* ---- page sources: what a lazy restore or a page server reads --------------- */
/* A source is reference counted: restores and servers keep their own
 * reference, so it may be released right after starting them. */

typedef struct pagewise_source pagewise_source;

/* The flat view of the image chain at `path`. */
PAGEWISE_EXPORT int pagewise_source_open_image(const char* path, pagewise_source** out);
/* A flat memory file (Firecracker's snapshot memory file). */
PAGEWISE_EXPORT int pagewise_source_open_file(const char* path, pagewise_source** out);
/* `size` bytes at `data`, borrowed: they must stay valid and unchanged until
 * every restore and server using the source is destroyed. */
PAGEWISE_EXPORT int pagewise_source_from_memory(const void* data, uint64_t size,
                                                pagewise_source** out);
PAGEWISE_EXPORT uint64_t pagewise_source_size(const pagewise_source* source);
PAGEWISE_EXPORT void pagewise_source_release(pagewise_source* source);

/* ---- remote images: S3-compatible object storage ------------------------------ */
/* Images pushed to a bucket are named s3://BUCKET/NAME; an image file behind
 * http(s):// is read with range requests. pagewise_image_open and
 * pagewise_source_open_image accept both with the defaults below; the
 * functions here take them explicitly. Credentials come from the
 * environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
 * or ~/.aws/credentials and ~/.aws/config profiles, and never appear in a
 * message. Thread safety: any thread; calls are independent. */

/* Zeroed fields (or options NULL) take the defaults given; a negative
 * count or duration is -EINVAL. Strings are borrowed for the call. */
typedef struct pagewise_remote_options {
  const char* endpoint;        /* NULL or "": AWS_ENDPOINT_URL, else the profile's, else AWS */
  const char* profile;         /* NULL or "": AWS_PROFILE, else "default" */
  const char* region;          /* NULL or "": AWS_REGION, else the profile's */
  int allow_http;              /* 1: plain http:// also to an endpoint not on this host */
  const char* cache_dir;       /* NULL or "": PAGEWISE_CACHE_DIR, else $XDG_CACHE_HOME/pagewise
                                * or ~/.cache/pagewise; shared by every pagewise process */
  uint64_t cache_bytes;        /* the chunk cache's bound; 0: PAGEWISE_CACHE_BYTES or 10 GiB */
  uint64_t memory_cache_bytes; /* verified chunks kept in memory; 0: 64 MiB */
  int connections;             /* parallel HTTP connections, 1..64 (else -EINVAL); 0: 8 */
  int64_t timeout_ns; /* per object, retries included; 0: PAGEWISE_REMOTE_TIMEOUT_MS or 30 s */
  int64_t connect_timeout_ns; /* per connection attempt; 0: 5 s */
} pagewise_remote_options;

typedef struct pagewise_push_stats {
  uint64_t layers;                  /* layers in the chain */
  uint64_t layers_uploaded;         /* layers whose manifest was new to the bucket */
  uint64_t chunks;                  /* distinct chunks the new layers use */
  uint64_t chunks_uploaded;         /* of those, not yet in the bucket */
  uint64_t chunk_bytes_uploaded;    /* bytes of the uploaded chunks */
  uint64_t manifest_bytes_uploaded; /* bytes of the uploaded manifests (and NAME) */
  int name_updated;                 /* 1: NAME was written (it held something else) */
} pagewise_push_stats;

typedef struct pagewise_pull_stats {
  uint64_t files;            /* layer files written: IMAGE, IMAGE.parent-1, ... */
  uint64_t bytes;            /* bytes written */
  uint64_t chunks_fetched;   /* chunks from the network */
  uint64_t chunks_cached;    /* ... from the host's chunk cache */
  uint64_t chunks_from_peer; /* ... fetched meanwhile by another pagewise process */
} pagewise_pull_stats;

/* Uploads the local chain `image` to `url` (s3://BUCKET/NAME), skipping
 * layers and chunks the bucket has. stats may be NULL. -ENOENT: no such
 * bucket or image; -EPERM: keys refused; -ETIMEDOUT: the endpoint failed
 * past the timeout; -EBADMSG: the image is damaged. A failed push leaves
 * NAME as it was. */
PAGEWISE_EXPORT int pagewise_push(const char* image, const char* url,
                                  const pagewise_remote_options* options,
                                  pagewise_push_stats* stats);
/* Downloads `url` as a local chain: the top layer at `image`, its parents
 * beside it (IMAGE.parent-1, ...). Every chunk is verified; files appear
 * only when complete. stats may be NULL. Errors as pagewise_push. */
PAGEWISE_EXPORT int pagewise_pull(const char* url, const char* image,
                                  const pagewise_remote_options* options,
                                  pagewise_pull_stats* stats);
/* pagewise_image_open for a URL (or a local path), with these options. */
PAGEWISE_EXPORT int pagewise_image_open_remote(const char* url,
                                               const pagewise_remote_options* options,
                                               pagewise_image** out);
/* pagewise_source_open_image for a URL (or a local path), with these
 * options: a lazy restore from it fetches chunks on demand, demand faults
 * first; a chunk that cannot be fetched or fails its hash raises SIGBUS in
 * the pages it holds (never zeros), and pagewise_lazy_restore_wait returns
 * the error. */
PAGEWISE_EXPORT int pagewise_source_open_remote(const char* url,
                                                const pagewise_remote_options* options,
                                                pagewise_source** out);

/* How pages are filled (lazy restore and page server); zeroed fields take
 * the defaults given. */
typedef struct pagewise_fill_policy {
  uint32_t fault_window_pages;     /* aligned window around a fault, 1..512; 0: 16 */
  uint32_t background_batch_pages; /* pages per background fill, 1..4096; 0: 64 */
  int no_background_fill;          /* 1: only faults install pages */
  int no_zeropage;                 /* 1: zero pages copied, not UFFDIO_ZEROPAGE */
} pagewise_fill_policy;

/* ---- lazy restore (in this process) ------------------------------------------ */
/* Thread safety: wait/stats from any thread. */

typedef struct pagewise_lazy_restore pagewise_lazy_restore;

typedef struct pagewise_restore_stats {
  uint64_t pages_total;
  uint64_t demand_faults;
  uint64_t pages_demand;
  uint64_t pages_background;
  uint64_t zero_pages;
  uint64_t bytes_copied;
  int64_t first_fault_ns; /* -1: no fault yet */
  int64_t resident_ns;    /* -1: not yet resident */
} pagewise_restore_stats;

/* Maps `count` regions (address 0: anywhere; length and offset: bytes of the
 * source's flat view) and fills them from `source` lazily: pages arrive on
 * first access and in the background. The mappings belong to the restore and
 * are unmapped by destroy. */
PAGEWISE_EXPORT int pagewise_lazy_restore_start(pagewise_source* source,
                                                const pagewise_region* regions, size_t count,
                                                const pagewise_fill_policy* policy,
                                                pagewise_lazy_restore** out);
/* Where region `index` is mapped (NULL for a bad index). */
PAGEWISE_EXPORT void* pagewise_lazy_restore_data(const pagewise_lazy_restore* restore,
                                                 size_t index);
/* Waits until every page is resident: 0, -ETIMEDOUT, or the fill's error. */
PAGEWISE_EXPORT int pagewise_lazy_restore_wait(pagewise_lazy_restore* restore, int64_t timeout_ns);
PAGEWISE_EXPORT int pagewise_lazy_restore_stats(const pagewise_lazy_restore* restore,
                                                pagewise_restore_stats* out);
/* Stops filling and unmaps the regions. */
PAGEWISE_EXPORT void pagewise_lazy_restore_destroy(pagewise_lazy_restore* restore);

/* ---- page server (pagewise serve) -------------------------------------------- */

typedef struct pagewise_page_server pagewise_page_server;

/* Listens on the Unix socket `socket_path` (replacing a socket file there)
 * and serves every client's Firecracker-style handshake from `source`.
 * policy may be NULL. */
PAGEWISE_EXPORT int pagewise_page_server_start(const char* socket_path, pagewise_source* source,
                                               const pagewise_fill_policy* policy,
                                               pagewise_page_server** out);
/* Waits until `clients` clients have been served and dropped. */
PAGEWISE_EXPORT int pagewise_page_server_wait(pagewise_page_server* server, size_t clients,
                                              int64_t timeout_ns);
/* Handshakes refused so far. Any thread. */
PAGEWISE_EXPORT uint64_t pagewise_page_server_refused(const pagewise_page_server* server);
/* Stops serving every client and removes the socket file; idempotent. */
PAGEWISE_EXPORT void pagewise_page_server_stop(pagewise_page_server* server);
/* Stops, then frees. */
PAGEWISE_EXPORT void pagewise_page_server_destroy(pagewise_page_server* server);

/* ---- lazy client: the guest side, turning server loss into SIGBUS ----------- */

typedef struct pagewise_lazy_client pagewise_lazy_client;

typedef enum pagewise_loss_policy {
  /* Every page touched after the server is gone raises SIGBUS (BUS_MCEERR_AR);
   * needs UFFDIO_POISON (Linux 6.6), else falls back to ABORT. */
  PAGEWISE_LOSS_SIGBUS = 0,
  /* The process aborts with a message as soon as the loss is seen. */
  PAGEWISE_LOSS_ABORT = 1
} pagewise_loss_policy;

/* A guest region for the handshake: `size` bytes the caller mapped (private
 * anonymous, page aligned) at `address`, served from `offset` of the flat
 * view. page_size 0: the system page size. */
typedef struct pagewise_guest_region {
  uint64_t address;
  uint64_t size;
  uint64_t offset;
  uint64_t page_size;
} pagewise_guest_region;

typedef struct pagewise_lazy_client_options {
  pagewise_loss_policy on_loss;
  /* > 0: connect waits this long for the server's ready byte (its prefetch
   * is in); 0: does not wait. */
  int64_t wait_ready_ns;
  /* Called once, on an internal thread, when the server is found gone (may
   * be NULL); `ctx` is passed through. */
  void (*on_server_lost)(void* ctx, int error, const char* message);
  void* ctx;
} pagewise_lazy_client_options;

/* Registers `regions` with a new userfaultfd, connects to `socket_path`,
 * sends the handshake and starts the watchdog. options may be NULL. */
PAGEWISE_EXPORT int pagewise_lazy_client_connect(const char* socket_path,
                                                 const pagewise_guest_region* regions, size_t count,
                                                 const pagewise_lazy_client_options* options,
                                                 pagewise_lazy_client** out);
/* 0 while the server is connected, -EPIPE once it is gone. Any thread. */
PAGEWISE_EXPORT int pagewise_lazy_client_status(const pagewise_lazy_client* client);
/* 1 if connect saw the ready byte, else 0. */
PAGEWISE_EXPORT int pagewise_lazy_client_ready(const pagewise_lazy_client* client);
/* Faults every page in (all resident); -EPIPE if the server goes first. */
PAGEWISE_EXPORT int pagewise_lazy_client_populate(pagewise_lazy_client* client);
/* Waits until the server's loss was seen and handled (pages sealed). */
PAGEWISE_EXPORT int pagewise_lazy_client_wait_server_lost(pagewise_lazy_client* client,
                                                          int64_t timeout_ns);
/* Pages poisoned since the server was lost. Any thread. */
PAGEWISE_EXPORT uint64_t pagewise_lazy_client_poisoned_pages(const pagewise_lazy_client* client);
/* If the server is still connected, populates first (so disconnecting cannot
 * expose zero pages); then stops the watchdog and closes the connection. */
PAGEWISE_EXPORT void pagewise_lazy_client_destroy(pagewise_lazy_client* client);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PAGEWISE_PAGEWISE_H_ */
