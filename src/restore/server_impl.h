// PageServerImpl: the PageServer implementation, in three parts:
//   server.cc         lifecycle (Start, Stop), reports, dropping clients,
//                     events;
//   server_accept.cc  the accept thread: accepting (with back-off when out
//                     of descriptors), peer checks, reading handshakes in
//                     progress (all at once, each within its deadline);
//   server_admit.cc   checking a complete handshake (the descriptor is a
//                     userfaultfd with the features we need, the regions,
//                     the limits) and starting the client's engine;
//   server_export.cc  serve handover (server_handover.h): exporting the
//                     server's state to a successor and importing it.
// Features that hook into the server (metrics, handover, other transports)
// add a part of their own and reach the state below through these members.
//
// Threads: the accept thread owns pending_ and admits clients (an export
// or import for a handover runs while it is not running); each client
// has its engine's threads; Stop() and the public getters run on callers'
// threads. Shared state is guarded by mu_.
#ifndef PAGEWISE_RESTORE_SERVER_IMPL_H_
#define PAGEWISE_RESTORE_SERVER_IMPL_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pagewise/serve.h"
#include "restore/engine.h"
#include "restore/serve_checks.h"
#include "restore/server_handover.h"
#include "sys/files.h"
#include "sys/unix_socket.h"

namespace pagewise::restore {

using ServeClock = std::chrono::steady_clock;

// A connection whose handshake is not complete yet (accept thread only).
struct Pending {
  uint64_t connection = 0;
  int sock = -1;
  sys::PeerCredentials peer;
  std::vector<int> fds;     // every descriptor received so far (closed unless adopted)
  std::string bad_control;  // why the descriptors cannot be right (several, truncated...)
  std::string body;
  HandshakeScanner scanner;
  ServeClock::time_point deadline;
};

struct Client {
  ClientReport report;  // guarded by the server's mu_ (stats refreshed on read)
  int sock = -1;
  uint64_t bytes = 0;         // registered (counted in registered_total_)
  sys::FileIdentity uffd_id;  // of the client's userfaultfd (duplicate detection)
  std::unique_ptr<Engine> engine;
  std::atomic<bool> ready_sent{false};  // the ready byte went out (a handover carries it)
};

class PageServerImpl final : public PageServer, public HandoverPort {
 public:
  PageServerImpl(std::string path, std::shared_ptr<const PageSource> source, ServeOptions opt,
                 Env* env, sys::ListeningSocket listen, int wake_fd);
  ~PageServerImpl() override { Stop(); }
  // Starts the accept thread (after Import, once handed-over clients are in).
  void Begin();

  void Stop() override;
  const std::string& socket_path() const override { return path_; }
  std::vector<ClientReport> clients() const override;
  Status WaitClientsDone(size_t count, Duration timeout) override;
  uint64_t refused() const override;
  Status last_refusal() const override;
  uint64_t accept_failures() const override;
  WorkingSetTrace trace() const override;

  // ---- server_export.cc (serve handover) ----
  Result<ServerExport> ExportForHandover() override;
  Status ResumeFromExport(ServerExport state) override;
  void HandedOver() override { handed_over_ = true; }
  // Takes in a handed-over state; before Begin() (no accept thread).
  void Import(ServerExport state);

 private:
  // Import's parts: a pending handshake (re-checked as if just accepted)
  // and a client being served (its engine continues where it was).
  void ImportPending(HandoverPending p, ServeClock::time_point now);
  void ImportClient(HandoverClient h);
  // ---- server_accept.cc (accept thread) ----
  void AcceptLoop();
  // Accepts one connection; false when accept failed for lack of
  // descriptors or memory (the caller backs off).
  bool AcceptOne();
  // One read of a pending handshake; *done once its JSON array is complete.
  // On failure *limit names the limit hit, if one was.
  Status ReadSome(Pending* p, bool* done, std::string* limit);
  void ClosePending(Pending* p);

  // ---- server_admit.cc (accept thread) ----
  void Admit(Pending* p);
  // The descriptor checks of a complete handshake: exactly one, a
  // userfaultfd with EVENT_REMOVE, not one served already. On success
  // *uffd is the client's descriptor (taken out of p->fds), *features
  // what it was set up with, *id its file identity.
  Status CheckDescriptor(Pending* p, int* uffd, uint64_t* features, sys::FileIdentity* id);
  // The engine options of a client (callbacks bound to it).
  EngineOptions EngineOptionsFor(const std::shared_ptr<Client>& client);
  // Starts serving an admitted client; false (and *why) if that failed.
  bool StartClient(const std::shared_ptr<Client>& client, int uffd, uint64_t features,
                   const CheckedRegions& regions, Status* why);

  // ---- server.cc ----
  // Drops clients whose engine stopped by itself (client gone).
  void Reap();
  void Drop(Client& c, Status why);
  // Refuses a pending connection: logs, counts, closes (the client sees
  // end of stream).
  void Refuse(Pending* p, const Status& why, const std::string& limit);
  void Emit(ServeEvent e) const;
  ServeEvent EventFor(const Pending& p, ServeEvent::Kind kind) const;
  // Writes the ready byte on `sock` (c's connection, copied by the caller:
  // Drop() clears c->sock) and notes it in c.
  void SendReady(int sock, Client* c);
  // The allow-list check (serve --allow-uid/--allow-gid): Ok if `peer` may
  // connect, kPermissionDenied naming its uid and gid if not.
  Status CheckPeer(const sys::PeerCredentials& peer) const;

  const std::string path_;
  std::shared_ptr<const PageSource> source_;
  const ServeOptions opt_;
  Env* env_;
  sys::ListeningSocket listen_;
  int wake_fd_;
  uid_t server_uid_;
  sys::FileIdentity shared_anon_inode_;  // eventfd's inode: uffds sharing it cannot be told apart
  std::thread thread_;
  std::vector<Pending> pending_;  // accept thread only
  uint64_t next_connection_ = 0;  // accept thread only
  int backoff_ms_ = 0;            // accept thread only: current accept back-off
  ServeClock::time_point backoff_until_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Client>> active_;   // guarded by mu_
  std::deque<std::shared_ptr<Client>> finished_;  // guarded by mu_, the last max_finished_records
  std::shared_ptr<Client> first_;                 // guarded by mu_: client 0 (trace)
  uint64_t registered_total_ = 0;                 // guarded by mu_: bytes of active clients
  uint64_t next_id_ = 0;                          // guarded by mu_
  size_t dropped_ = 0;                            // guarded by mu_
  bool stopped_ = false;                          // guarded by mu_
  bool paused_ = false;                           // guarded by mu_: exported for a handover
  std::atomic<bool> handed_over_{false};          // a successor took over: its socket now
  uint64_t refused_ = 0;                          // guarded by mu_
  uint64_t accept_failures_ = 0;                  // guarded by mu_
  Status last_refusal_;                           // guarded by mu_
  WorkingSetTrace first_trace_;                   // guarded by mu_
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_SERVER_IMPL_H_
