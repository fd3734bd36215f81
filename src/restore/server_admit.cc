// PageServer: admitting a complete handshake. Everything in it came from a
// client that may be hostile: the descriptor must be one userfaultfd (by
// the kernel's account, sys/uffd_check.h) set up with EVENT_REMOVE and not
// served already; the body must parse and its regions pass CheckRegions;
// the client must fit the server-wide limits. Only then is an engine
// started for it, and an allocation failure while building it refuses
// that client alone.

#include <algorithm>
#include <new>
#include <string>
#include <utility>

#include "restore/server_impl.h"
#include "sys/uffd_check.h"
#include "sys/userfaultfd.h"
#include "sys/wake_eventfd.h"

namespace pagewise::restore {

Status PageServerImpl::CheckDescriptor(Pending* p, int* uffd, uint64_t* features,
                                       sys::FileIdentity* id) {
  if (!p->bad_control.empty()) return Status::InvalidArgument(p->bad_control);
  if (p->fds.empty()) {
    return Status::InvalidArgument(
        "handshake carried no descriptor (send the userfaultfd with SCM_RIGHTS)");
  }
  if (p->fds.size() > 1) {
    return Status::InvalidArgument("handshake carried " + std::to_string(p->fds.size()) +
                                   " descriptors; it carries exactly one, the userfaultfd");
  }
  PW_ASSIGN_OR_RETURN(sys::UffdInfo info, sys::InspectUserfaultfd(p->fds[0]));
  if (!info.reports_removes()) {
    return Status::InvalidArgument(
        "the userfaultfd was set up without UFFD_FEATURE_EVENT_REMOVE (features " +
        sys::UffdFeatureNames(info.features) +
        "): pages the program drops would be served again; ask for it in UFFDIO_API");
  }
  PW_ASSIGN_OR_RETURN(*id, sys::IdentifyFd(p->fds[0]));
  // Two connections serving one userfaultfd would split its events between
  // two engines. Each userfaultfd has its own inode on current kernels;
  // where they share the anonymous inode (as eventfds do) this cannot be
  // told and is not checked.
  if (!id->SameFile(shared_anon_inode_)) {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& c : active_) {
      if (c->uffd_id.SameFile(*id)) {
        return Status::InvalidArgument("this userfaultfd is served already (client " +
                                       std::to_string(c->report.id) + ")");
      }
    }
  }
  *features = info.features;
  *uffd = p->fds[0];
  p->fds.clear();
  return Status::Ok();
}

void PageServerImpl::Admit(Pending* p) {
  int uffd = -1;
  uint64_t features = 0;
  sys::FileIdentity uffd_id;
  Status st = CheckDescriptor(p, &uffd, &features, &uffd_id);
  if (!st.ok()) return Refuse(p, st, "");
  sys::Userfaultfd owned = sys::Userfaultfd::Adopt(uffd, features, env_);  // closes on refusal
  Result<std::vector<Region>> regions = ParseHandshake(p->body);
  if (!regions.ok()) return Refuse(p, regions.status(), "");
  std::string limit;
  Result<CheckedRegions> checked =
      CheckRegions(*regions, source_->size(), PageSize(), opt_.limits, &limit);
  if (!checked.ok()) return Refuse(p, checked.status(), limit);

  auto client = std::make_shared<Client>();
  client->sock = p->sock;
  client->bytes = checked->bytes;
  client->uffd_id = uffd_id;
  client->report.connection = p->connection;
  client->report.pid = p->peer.pid;
  client->report.uid = p->peer.uid;
  client->report.gid = p->peer.gid;
  client->report.uffd_features = features;
  client->report.regions = std::move(regions).value();
  client->report.active = true;
  {
    // Reserve the client's place under the server-wide limits.
    std::lock_guard<std::mutex> lk(mu_);
    if (active_.size() >= opt_.limits.max_clients) {
      st = Status(Code::kResourceExhausted, 0,
                  std::to_string(active_.size()) + " clients are being served (limit " +
                      std::to_string(opt_.limits.max_clients) + ")");
      limit = "clients";
    } else if (checked->bytes > opt_.limits.max_total_bytes -
                                    std::min(registered_total_, opt_.limits.max_total_bytes)) {
      st = Status(Code::kResourceExhausted, 0,
                  "registering " + std::to_string(checked->bytes) + " more bytes would exceed " +
                      std::to_string(opt_.limits.max_total_bytes) + " (limit total_bytes; " +
                      std::to_string(registered_total_) + " registered)");
      limit = "total_bytes";
    } else {
      registered_total_ += checked->bytes;
      client->report.id = next_id_++;
      active_.push_back(client);
      if (client->report.id == 0) first_ = client;
    }
  }
  if (!st.ok()) return Refuse(p, st, limit);
  if (!StartClient(client, owned.Release(), features, *checked, &st)) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      registered_total_ -= std::min(registered_total_, client->bytes);
      active_.erase(std::find(active_.begin(), active_.end(), client));
      client->report.active = false;
    }
    return Refuse(p, st, st.code() == Code::kResourceExhausted ? "memory" : "");
  }
  p->sock = -1;  // the client owns it now
  if (opt_.send_ready && opt_.fill.prefetch.empty()) SendReady(client->sock, client.get());
  ClientReport report;
  {
    std::lock_guard<std::mutex> lk(mu_);
    report = client->report;
  }
  if (opt_.on_client) opt_.on_client(report);
}

EngineOptions PageServerImpl::EngineOptionsFor(const std::shared_ptr<Client>& client) {
  EngineOptions eo;
  eo.env = env_;
  eo.fill = opt_.fill;
  eo.watch_fd = client->sock;
  eo.max_spaces = opt_.limits.max_spaces;
  eo.fill.record_trace = opt_.fill.record_trace && client->report.id == 0;
  eo.on_finished = [this](const Status&) { sys::EventfdSignal(wake_fd_); };
  // The client's identity is fixed once admitted: copied, so that the
  // callback (under one of the engine's locks) takes none of ours.
  ServeEvent limit_event;
  limit_event.kind = ServeEvent::Kind::kLimit;
  limit_event.limit = "spaces";
  limit_event.connection = client->report.connection;
  limit_event.client = static_cast<int64_t>(client->report.id);
  limit_event.pid = client->report.pid;
  limit_event.uid = client->report.uid;
  limit_event.gid = client->report.gid;
  eo.on_space_refused = [this, limit_event](const Status& why) {
    ServeEvent e = limit_event;
    e.reason = why;
    Emit(e);
  };
  if (opt_.send_ready && !eo.fill.prefetch.empty()) {
    // On the engine's filler thread. Drop() stops the engine (joining
    // that thread) before it closes the socket, so the descriptor is ours;
    // the Client outlives its engine.
    const int sock = client->sock;
    Client* c = client.get();
    eo.on_prefetched = [this, sock, c] { SendReady(sock, c); };
  }
  return eo;
}

bool PageServerImpl::StartClient(const std::shared_ptr<Client>& client, int uffd, uint64_t features,
                                 const CheckedRegions& regions, Status* why) {
  sys::Userfaultfd owned = sys::Userfaultfd::Adopt(uffd, features, env_);
  EngineOptions eo = EngineOptionsFor(client);
  // The engine's per-page state (a byte a page) is what a client's regions
  // cost the server; a failure to allocate it refuses this client, not the
  // server. Probed first without throwing (nothing is touched, so the probe
  // costs no memory), then caught if the engine's own allocation fails.
  const uint64_t state_bytes = regions.bytes / PageSize();
  // (A call of operator new, not a new-expression: compilers may not
  // elide it.)
  void* probe = ::operator new(std::max<uint64_t>(state_bytes, 1), std::nothrow);
  const bool have_memory = probe != nullptr;
  ::operator delete(probe);
  if (!have_memory) {
    *why = Status(Code::kResourceExhausted, ENOMEM,
                  "out of memory for the client's page state (" + std::to_string(state_bytes) +
                      " bytes for " + std::to_string(regions.bytes) + " registered)");
    return false;
  }
  try {
    auto engine = std::make_unique<Engine>(source_, std::move(eo));
    engine->AddSpace(std::move(owned), regions.space);
    std::lock_guard<std::mutex> lk(mu_);
    client->engine = std::move(engine);
  } catch (const std::bad_alloc&) {
    *why = Status(Code::kResourceExhausted, ENOMEM,
                  "out of memory for the client's page state (" + std::to_string(regions.bytes) +
                      " bytes registered)");
    return false;
  }
  Status st = client->engine->Start();
  if (!st.ok()) {
    std::lock_guard<std::mutex> lk(mu_);
    client->engine.reset();  // closes the userfaultfd
    *why = st.WithContext("starting the client's server");
    return false;
  }
  return true;
}

}  // namespace pagewise::restore
