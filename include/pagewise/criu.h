// CRIU integration: pagewise as CRIU's lazy-pages daemon, CRIU dumps as
// pagewise images, and a TCP page server for post-copy migration.
//
// RunCriuLazyPages is a drop-in for `criu lazy-pages -D DIR`: it listens
// on DIR/lazy-pages.socket, where `criu restore --lazy-pages -D DIR`
// connects and sends, for every restored task, its pid and then its
// userfaultfd (UFFDIO_API done with EVENT_FORK|REMAP|UNMAP|REMOVE, the
// lazy VMAs registered); a zombie comes as a negative pid without a
// descriptor; a u32 0x52535446 ends the restore. Each task is served by
// its own pagewise restore engine as soon as its descriptor arrives
// (CRIU's restorer touches lazy memory before the end marker): demand
// faults in windows, background fill, working-set prefetch, and every
// event (FORK of restored tasks, REMAP, REMOVE, UNMAP, tasks exiting). It
// returns once the restore has ended and every task's memory is resident
// (or the task is gone).
//
// Pages come from the dump itself (pagemap/pages images and parent
// dumps), from a pagewise image made by ImportCriuDump, or from a TCP
// page server (CriuTcpServer) on another host or network namespace. The
// layout (which flat offset holds which task's pages) always comes from
// the dump's pagemap and mm images; an image or a server for another dump
// is refused (layout digest mismatch).
//
// Failure is loud: a page that cannot be read (cut network, corrupt data)
// is never installed as zeros: the task gets SIGBUS on access
// (UFFDIO_POISON) or is killed, as chosen, and the report says why.
//
// Thread safety: RunCriuLazyPages blocks its caller and runs internal
// threads; ImportCriuDump is a plain function; CriuTcpServer methods are
// safe from any thread (not its destruction).
#ifndef PAGEWISE_CRIU_H_
#define PAGEWISE_CRIU_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// What happens to a restored task whose pages can no longer be read.
enum class CriuLossPolicy {
  kSigbus,  // pages that cannot be read are poisoned: an access raises SIGBUS
  kKill,    // the task is killed (SIGKILL) as soon as a read fails
};

struct CriuLazyPagesOptions {
  std::string dump_dir;     // criu's -D (images)
  std::string work_dir;     // criu's -W (where the socket is); empty: dump_dir
  std::string image;        // pages from this image (ImportCriuDump of dump_dir)
  std::string page_server;  // pages from a CriuTcpServer at HOST:PORT
  // Working set: if the file exists, its pages are installed first; after
  // the restore the demand faults seen are written to it (WriteTrace).
  std::string trace_path;
  int status_fd = -1;  // criu's --status-fd: '\0' written (and closed) when listening
  size_t fault_window_pages = 16;
  size_t background_batch_pages = 256;
  bool background_fill = true;  // false: pages only on fault (tests of events)
  CriuLossPolicy on_loss = CriuLossPolicy::kSigbus;
  // Network: connect / read timeout for the page server, milliseconds.
  int network_timeout_ms = 5000;
  // Progress and event lines (one per call, no newline); may be empty.
  std::function<void(const std::string&)> log;
};

struct CriuTaskReport {
  pid_t pid = 0;
  uint64_t lazy_pages = 0;  // pages the dump leaves to the daemon
  Status status;            // OK, or why serving it failed
  bool killed = false;      // killed by the kKill policy
  RestoreStats stats;
};

struct CriuLazyPagesReport {
  std::vector<CriuTaskReport> tasks;
  uint32_t zombies = 0;
  bool restore_finished = false;  // the end marker arrived
  double seconds = 0;             // connection to the end
  std::string source;             // what served the pages
};

// Serves one `criu restore --lazy-pages` to its end. Returns the report
// (also when a task failed: see each task's status), or an error when the
// restore could not be served at all: a wrong dump directory, images of
// an unknown CRIU version, a corrupt pagemap, an image or page server for
// another dump, a task whose userfaultfd did not arrive, criu restore
// hanging up before its end marker.
Result<CriuLazyPagesReport> RunCriuLazyPages(const CriuLazyPagesOptions& options);

// Writes the memory of the CRIU dump at `dump_dir` (every task's pagemap
// entries, parents resolved) as a pagewise image at `image_path`: one
// region per pagemap entry piece (named "criu pid=P lazy|eager"), the
// regions laid out as CriuLazyPages expects. With `layers`, a dump with
// parent dumps becomes a chain: IMAGE.base holds what the dump takes from
// its parents, IMAGE only the pages it dumped itself. `progress` gets
// bytes done. The image is verified after writing.
struct CriuImportOptions {
  ImageWriteOptions write;
  bool layers = true;
  ProgressFn progress;
};
struct CriuImportReport {
  uint64_t tasks = 0, regions = 0, pages = 0;
  uint64_t dump_pages_bytes = 0;  // the dump's pages-*.img (whole chain)
  uint64_t image_bytes = 0;       // the image file(s) written
  std::vector<std::string> layers;
};
Result<CriuImportReport> ImportCriuDump(const std::string& dump_dir, const std::string& image_path,
                                        const CriuImportOptions& options = {});

// A page server over TCP for the flat view of a dump (or of an image
// imported from it). Protocol (docs/criu.md): a hello with the layout
// digest and flat size, then framed read requests with a priority;
// demand requests are answered before background ones. Every request is
// checked (bounds, sizes, rates); a bad client is dropped alone.
struct CriuTcpServerOptions {
  size_t max_clients = 16;
  size_t max_request_bytes = 4 << 20;
  int idle_timeout_ms = 60000;  // a client silent this long is dropped
};
class CriuTcpServer {
 public:
  // Listens on "ADDR:PORT" (port 0: any; see port()) and serves `dump_dir`
  // (image_path empty) or `image_path` (whose layout is taken from it).
  static Result<std::unique_ptr<CriuTcpServer>> Start(const std::string& listen,
                                                      const std::string& dump_dir,
                                                      const std::string& image_path,
                                                      const CriuTcpServerOptions& options = {});
  virtual ~CriuTcpServer() = default;  // Stop()
  virtual void Stop() = 0;
  virtual uint16_t port() const = 0;
  virtual uint64_t requests() const = 0;
  virtual uint64_t clients_refused() const = 0;
  virtual std::string Describe() const = 0;
};

// `pagewise serve --tcp`: starts a CriuTcpServer, writes '\0' to status_fd
// (if >= 0, then closes it) once listening, logs a line, and serves until
// SIGINT or SIGTERM (blocked in every thread of the process from this call
// on, then waited for). Errors: those of Start.
Status RunCriuTcpServer(const std::string& listen, const std::string& dump_dir,
                        const std::string& image_path, const CriuTcpServerOptions& options,
                        int status_fd, const std::function<void(const std::string&)>& log);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_CRIU_H_
