// Out-of-process page serving over Firecracker's UFFD handshake.
//
// The handshake (what `pagewise serve` speaks): the client (a VMM) maps its
// guest memory, creates a userfaultfd (with at least UFFD_FEATURE_EVENT_
// REMOVE), registers every region in MISSING mode, connects to the server's
// Unix stream socket and sends ONE message: the userfaultfd by SCM_RIGHTS,
// and as the body a JSON array of {"base_host_virt_addr", "size", "offset",
// "page_size"} objects ("page_size_kib" is accepted too; it holds bytes
// despite its name), `offset` being the region's byte offset in the flat
// memory file. The client sends nothing else. The server learns the
// client's pid with SO_PEERCRED.
//
// Ready byte (an extension; clients may ignore it): once a client's
// prefetch list is installed (at once when there is none), the server
// writes one byte, kReadyByte, to that client's socket. A client that
// waits for it (LazyClientOptions::wait_ready) resumes with its working
// set already resident instead of racing the prefetch with demand faults.
// Firecracker never reads the socket after the handshake, so the byte just
// stays in the socket buffer.
//
// Trust: every client is treated as hostile (docs/security.md). The
// descriptor a client sends must be a userfaultfd set up with at least
// EVENT_REMOVE (checked on the file itself), its peer credentials must be
// allowed (ServeAccess), its regions must be page aligned, must not wrap,
// overlap or lie beyond the source, and must stay within ServeLimits.
// Anything else is refused, logged (ServeEvent) and ends that connection
// only; a client's error, death or resource use never reaches another
// client or the server's own descriptors.
//
// PageServer serves any number of clients at once from one PageSource (a
// flat memory file as is, an image as if it were that flat file), each with
// its own restore engine (demand faults in windows, background fill,
// working-set prefetch, and every userfaultfd event the client's fd was set
// up to deliver: REMOVE, and FORK/REMAP/UNMAP if present). A client is
// dropped, alone, when its socket reaches end of stream or its mm is gone.
//
// Server death: the kernel keeps a userfaultfd's ranges registered while
// any process holds the fd. A client that keeps its own copy (Firecracker
// does) then blocks forever at its next missing page: a hang, not data
// loss. A client that closed its copy has its ranges unregistered when the
// server's copy goes away, and every page not yet served then reads as
// ZERO, silently. LazyClient is the client side that turns server death
// into an error: it keeps its copy (no zero pages), watches the socket, and
// when the server is gone it takes over the userfaultfd and poisons every
// page that faults (UFFDIO_POISON: the access raises SIGBUS), or aborts the
// process, as the caller chooses. See docs/restore.md.
//
// Reusing addresses: the kernel lets any userfaultfd of a process fill any
// range of that process registered with ANY userfaultfd. A client that
// disconnects, unmaps its guest memory and then registers new memory at the
// same addresses for a new connection must first wait until the server has
// dropped the old connection (the server notices end of stream
// asynchronously); otherwise the old connection's background fill may
// still write into the new mapping. A client that exits (Firecracker) or
// that uses LazyClient (which makes everything resident before it
// disconnects) is not exposed.
//
// Regions: the handshake's objects are pagewise::Region values (address =
// base_host_virt_addr, length = size, offset, page_size); the other Region
// fields are not part of the protocol. A PageServer installs pages by the
// same FillPolicy as an in-process LazyRestore (ServeOptions::fill).
//
// Thread safety: PageServer and LazyClient methods are safe from any thread
// (not their destruction). Callbacks run on internal threads and must not
// destroy the object that called them.
#ifndef PAGEWISE_SERVE_H_
#define PAGEWISE_SERVE_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/region.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"
#include "pagewise/time.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// The byte a PageServer writes to a client once its prefetch list is in.
inline constexpr char kReadyByte = 'R';

// Parses a handshake body: one Region per element of the JSON array, with
// address (base_host_virt_addr: where the client mapped the region),
// length (size, bytes), offset (byte offset in the flat memory file) and
// page_size ("page_size" or "page_size_kib", bytes). Errors
// (kInvalidArgument) name the element and field that is missing or
// malformed.
Result<std::vector<Region>> ParseHandshake(std::string_view body);
// The handshake body for `regions` (address, length, offset, page_size;
// written with "page_size").
std::string HandshakeJson(const std::vector<Region>& regions);

struct ClientReport {
  uint64_t id = 0;          // 0, 1, 2... in admission order
  uint64_t connection = 0;  // 0, 1, 2... in accept order (ServeEvent::connection)
  pid_t pid = 0;            // SO_PEERCRED at connect time
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t uffd_features = 0;  // UFFD_FEATURE_* the client's userfaultfd was set up with
  std::vector<Region> regions;
  bool active = false;  // still being served
  Status status;        // why serving ended (kPeerGone: the client went away)
  RestoreStats stats;
};

// What a page server accepts from one client, and in all. A handshake
// over a limit is refused (naming the limit); a running client that
// exceeds one (max_spaces) is contained as described there. Every limit
// must be >= 1.
struct ServeLimits {
  size_t max_regions = 64;  // regions in one handshake
  // Bytes a client may register (the server keeps one byte of state per
  // page of each of the client's address spaces).
  uint64_t max_client_bytes = uint64_t{256} << 30;
  uint64_t max_total_bytes = uint64_t{1} << 40;  // registered by all active clients
  size_t max_pending = 64;                       // connections whose handshake is not complete
  size_t max_clients = 128;                      // clients being served at once
  // Address spaces per client: its own plus the children its forks created
  // (UFFD_EVENT_FORK gives the server one userfaultfd per child). A child
  // beyond the limit is not served: every page it does not have yet is
  // poisoned (an access raises SIGBUS, never reads zeros) and its
  // userfaultfd is closed.
  size_t max_spaces = 16;
  size_t max_finished_records = 256;  // finished clients kept for clients()
  size_t max_handshake_bytes = 1 << 20;
};

// Who may connect. A peer is admitted if its uid (SO_PEERCRED) is in
// allow_uids, or its primary or a supplementary group is in allow_gids.
// Empty allow_uids means the server's own effective uid.
struct ServeAccess {
  std::vector<uid_t> allow_uids;
  std::vector<gid_t> allow_gids;
  mode_t socket_mode = 0600;  // of the socket file, set before it listens
};

// One line's worth of what happened to a connection that did not go well
// (or ended): a refused handshake, a client dropped by the server, a
// client done (it went away), a limit hit.
struct ServeEvent {
  enum class Kind { kRefused, kDropped, kDone, kLimit };
  Kind kind = Kind::kRefused;
  uint64_t connection = 0;  // accept order; the value of no connection for server-wide events
  int64_t client = -1;      // ClientReport::id once admitted, else -1
  pid_t pid = 0;            // 0 when unknown
  int64_t uid = -1;         // -1 when unknown
  int64_t gid = -1;
  std::string limit;  // the limit hit ("regions", "client_bytes", "total_bytes", "pending",
                      // "clients", "spaces", "handshake_bytes", "descriptors"), or empty
  Status reason;
};
// "refused", "dropped", "done", "limit".
std::string_view ServeEventKindName(ServeEvent::Kind kind);
// The event as one structured line (no newline):
// event=refused conn=3 client=- pid=123 uid=1000 gid=1000 limit=regions
// code=invalid_argument reason="handshake lists 70 regions (limit 64)".
// Values with spaces are quoted; quotes, backslashes and control
// characters in them are escaped, so one event is always one line.
std::string FormatServeEvent(const ServeEvent& event);

struct ServeOptions {
  // How each client's pages are installed (fill.prefetch: flat offsets
  // installed first, for every client; fill.record_trace records the FIRST
  // client's demand faults; fill.wait_for_prefetch does not apply: clients
  // wait for kReadyByte).
  FillPolicy fill;
  // A client must send its handshake message within this (> 0).
  Duration handshake_timeout = std::chrono::seconds(10);
  bool send_ready = true;  // write kReadyByte once prefetch is in (above)
  ServeLimits limits;
  ServeAccess access;
  // Called on an internal thread when a client connects (active) and when
  // it is dropped (inactive, with its final stats and status).
  std::function<void(const ClientReport&)> on_client;
  // Called on an internal thread, once per event (FormatServeEvent gives
  // its log line). Must not block for long: the accept loop waits for it.
  std::function<void(const ServeEvent&)> on_event;
};

// Checks the options' numbers (the fill policy, limits >= 1, a positive
// handshake timeout, a socket mode within 0777): kInvalidArgument naming
// the field and its range.
Status ValidateServeOptions(const ServeOptions& options);

class PageServer {
 public:
  // Listens on `socket_path` and starts accepting. Only a stale socket (a
  // socket file nobody listens on) there is replaced; a live socket or any
  // other file is refused (kAlreadyExists naming the path). Errors: bad
  // options (ValidateServeOptions), the socket cannot be created.
  static Result<std::unique_ptr<PageServer>> Start(const std::string& socket_path,
                                                   std::shared_ptr<const PageSource> source,
                                                   const ServeOptions& options = {});

  // Stop()s.
  virtual ~PageServer() = default;
  PageServer(const PageServer&) = delete;
  PageServer& operator=(const PageServer&) = delete;

  // Stops accepting, stops serving every client (closing our copies of
  // their userfaultfds and their sockets) and removes the socket file if
  // it is still the one this server created. Idempotent.
  virtual void Stop() = 0;

  virtual const std::string& socket_path() const = 0;
  // Active clients and the last limits.max_finished_records finished ones.
  virtual std::vector<ClientReport> clients() const = 0;

  // Waits until at least `count` clients have been dropped. OK, or
  // kTimeout once `timeout` expired (kNoTimeout: no limit).
  virtual Status WaitClientsDone(size_t count, Duration timeout) = 0;

  // Handshakes refused so far (malformed body, no descriptor or not a
  // userfaultfd, a peer not allowed, a limit, unsupported page size,
  // regions beyond the source), with the last reason.
  virtual uint64_t refused() const = 0;
  virtual Status last_refusal() const = 0;
  // Times accept(2) failed for lack of descriptors or memory (EMFILE,
  // ENFILE, ENOBUFS, ENOMEM); each time the server stops accepting for a
  // while (10 ms doubling to 1 s) instead of retrying at once.
  virtual uint64_t accept_failures() const = 0;

  // The first client's demand-fault trace (fill.record_trace).
  virtual WorkingSetTrace trace() const = 0;

 protected:
  PageServer() = default;
};

enum class ServerLossPolicy {
  // Every page that faults after the server is gone is poisoned: the
  // access raises SIGBUS (the program can catch it and report). Needs
  // UFFDIO_POISON (Linux 6.6); without it the policy falls back to kAbort.
  kPoison,
  // The process aborts with a message on stderr as soon as the loss is seen.
  kAbort,
};

struct LazyClientOptions {
  ServerLossPolicy on_loss = ServerLossPolicy::kPoison;
  // > 0: Connect() waits up to this long for the server's kReadyByte (sent
  // once the server's prefetch list for us is installed), so the caller
  // resumes with its working set resident. A server that closes the
  // connection instead (it refused the handshake) makes Connect() fail
  // with kPeerGone. On timeout Connect() returns normally and ready() is
  // false: pages still arrive on demand. Zero (or negative): do not wait.
  Duration wait_ready = Duration::zero();
  // Called once, on the watchdog thread, when the server is found gone.
  std::function<void(const Status&)> on_server_lost;
};

class LazyClient {
 public:
  // Creates a userfaultfd (EVENT_REMOVE required; FORK, REMAP and UNMAP
  // asked for when offered), registers `regions` (the caller's private
  // anonymous mappings, page aligned; address, length, offset and
  // page_size are sent) in MISSING mode, connects to
  // `socket_path`, sends the handshake and starts the watchdog. From then
  // on the regions fill from the server as they are touched.
  static Result<std::unique_ptr<LazyClient>> Connect(const std::string& socket_path,
                                                     const std::vector<Region>& regions,
                                                     const LazyClientOptions& options = {});

  // If the server is still connected, first makes every region resident
  // (Populate) so that disconnecting cannot expose zero pages; then stops
  // the watchdog and closes the socket and our userfaultfd.
  virtual ~LazyClient() = default;
  LazyClient(const LazyClient&) = delete;
  LazyClient& operator=(const LazyClient&) = delete;

  // OK while the server is connected; kPeerGone once it is gone.
  virtual Status status() const = 0;
  // Waits until the server is seen gone and that was handled (on_server_lost
  // called, every missing page poisoned): OK then, kTimeout once `timeout`
  // expired (kNoTimeout: no limit).
  virtual Status WaitServerLost(Duration timeout) = 0;
  // Faults every page of the regions in (MADV_POPULATE_READ), so that all
  // of them are resident. Fails (kPeerGone) if the server goes away first.
  virtual Status Populate() = 0;
  // Pages poisoned after the server was lost.
  virtual uint64_t poisoned_pages() const = 0;
  // Connect() saw the server's kReadyByte (only with wait_ready > 0).
  virtual bool ready() const = 0;

 protected:
  LazyClient() = default;
};

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_SERVE_H_
