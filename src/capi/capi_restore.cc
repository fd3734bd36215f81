// C API: page sources, in-process lazy restore, the page server and the lazy
// client.

#include <algorithm>
#include <cerrno>
#include <climits>

#include "capi/capi_internal.h"
#include "pagewise/env.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"

namespace pc = pagewise::capi;
using pagewise::Result;
using pagewise::Status;

struct pagewise_lazy_restore {
  std::unique_ptr<pagewise::LazyRestore> restore;
  std::vector<bool> fresh;  // region i was mapped by the restore (unmapped by destroy)
};

struct pagewise_page_server {
  std::unique_ptr<pagewise::PageServer> server;
};

struct pagewise_lazy_client {
  std::unique_ptr<pagewise::LazyClient> client;
};

namespace pagewise::capi {
namespace {

// int64 nanoseconds (PAGEWISE_NO_TIMEOUT: no limit) to the C++ API's
// milliseconds, rounded up so that a short positive timeout still waits.
int ToMillis(int64_t ns) {
  if (ns < 0) return -1;
  const int64_t ms = (ns + 999999) / 1000000;
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

// A wait that ran out of time: -ETIMEDOUT (the C++ API says kRetry).
int WaitError(const Status& s) {
  if (s.code() == Code::kRetry) {
    SetError(s);
    return -ETIMEDOUT;
  }
  return SetError(s);
}

Status ApplyPolicy(const pagewise_fill_policy* p, size_t* window, size_t* batch, bool* background,
                   bool* zeropage) {
  if (p == nullptr) return Status::Ok();
  if (p->fault_window_pages != 0) *window = p->fault_window_pages;
  if (p->background_batch_pages != 0) *batch = p->background_batch_pages;
  if (*window > 512) {
    return Status::InvalidArgument("fill policy: fault_window_pages is " + std::to_string(*window) +
                                   "; valid: 1..512 (0: default 16)");
  }
  if (*batch > 4096) {
    return Status::InvalidArgument("fill policy: background_batch_pages is " +
                                   std::to_string(*batch) + "; valid: 1..4096 (0: default 64)");
  }
  *background = p->no_background_fill == 0;
  *zeropage = p->no_zeropage == 0;
  return Status::Ok();
}

int AdoptSource(Result<std::shared_ptr<PageSource>> s, pagewise_source** out) {
  if (!s.ok()) return SetError(s.status());
  *out = new pagewise_source{std::move(*s)};
  return 0;
}

}  // namespace
}  // namespace pagewise::capi

extern "C" {

int pagewise_source_open_image(const char* path, pagewise_source** out) {
  return pc::Guard([&] {
    if (path == nullptr || out == nullptr) {
      return pc::InvalidArgument("pagewise_source_open_image: NULL argument");
    }
    *out = nullptr;
    return pc::AdoptSource(pagewise::OpenImageSource(path), out);
  });
}

int pagewise_source_open_file(const char* path, pagewise_source** out) {
  return pc::Guard([&] {
    if (path == nullptr || out == nullptr) {
      return pc::InvalidArgument("pagewise_source_open_file: NULL argument");
    }
    *out = nullptr;
    return pc::AdoptSource(pagewise::OpenMemFileSource(path), out);
  });
}

int pagewise_source_from_memory(const void* data, uint64_t size, pagewise_source** out) {
  return pc::Guard([&] {
    if (out == nullptr || (data == nullptr && size > 0)) {
      return pc::InvalidArgument("pagewise_source_from_memory: NULL argument");
    }
    *out = new pagewise_source{pagewise::MemorySource(data, size)};
    return 0;
  });
}

uint64_t pagewise_source_size(const pagewise_source* source) {
  return source == nullptr ? 0 : source->source->size();
}

void pagewise_source_release(pagewise_source* source) { delete source; }

int pagewise_lazy_restore_start(pagewise_source* source, const pagewise_region* regions,
                                size_t count, const pagewise_fill_policy* policy,
                                pagewise_lazy_restore** out) {
  return pc::Guard([&] {
    if (source == nullptr || out == nullptr || (regions == nullptr && count > 0)) {
      return pc::InvalidArgument("pagewise_lazy_restore_start: NULL argument");
    }
    *out = nullptr;
    pagewise::RestoreOptions options;
    Status s = pc::ApplyPolicy(policy, &options.fault_window_pages, &options.background_batch_pages,
                               &options.background_fill, &options.use_zeropage);
    if (!s.ok()) return pc::SetError(s);
    std::vector<pagewise::RestoreRegion> rs(count);
    std::vector<bool> fresh(count);
    for (size_t i = 0; i < count; ++i) {
      rs[i] = {regions[i].offset, regions[i].length, regions[i].address};
      fresh[i] = regions[i].address == 0;
    }
    Result<std::unique_ptr<pagewise::LazyRestore>> r =
        pagewise::LazyRestore::Start(source->source, std::move(rs), options);
    if (!r.ok()) return pc::SetError(r.status());
    *out = new pagewise_lazy_restore{std::move(*r), std::move(fresh)};
    return 0;
  });
}

void* pagewise_lazy_restore_data(const pagewise_lazy_restore* restore, size_t index) {
  if (restore == nullptr || index >= restore->restore->regions().size()) return nullptr;
  return restore->restore->data(index);
}

int pagewise_lazy_restore_wait(pagewise_lazy_restore* restore, int64_t timeout_ns) {
  return pc::Guard([&] {
    if (restore == nullptr) return pc::InvalidArgument("pagewise_lazy_restore_wait: NULL");
    return pc::WaitError(restore->restore->WaitResident(pc::ToMillis(timeout_ns)));
  });
}

int pagewise_lazy_restore_stats(const pagewise_lazy_restore* restore, pagewise_restore_stats* out) {
  return pc::Guard([&] {
    if (restore == nullptr || out == nullptr) {
      return pc::InvalidArgument("pagewise_lazy_restore_stats: NULL argument");
    }
    const pagewise::RestoreStats st = restore->restore->stats();
    out->pages_total = st.pages_total;
    out->demand_faults = st.demand_faults;
    out->pages_demand = st.pages_demand;
    out->pages_background = st.pages_background;
    out->zero_pages = st.zero_pages;
    out->bytes_copied = st.bytes_copied;
    out->first_fault_ns =
        st.first_fault_seconds < 0 ? -1 : static_cast<int64_t>(st.first_fault_seconds * 1e9);
    out->resident_ns =
        st.resident_seconds < 0 ? -1 : static_cast<int64_t>(st.resident_seconds * 1e9);
    return 0;
  });
}

void pagewise_lazy_restore_destroy(pagewise_lazy_restore* restore) {
  if (restore == nullptr) return;
  std::vector<std::pair<void*, size_t>> maps;
  const std::vector<pagewise::RestoreRegion>& rs = restore->restore->regions();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (restore->fresh[i]) maps.emplace_back(restore->restore->data(i), rs[i].length);
  }
  restore->restore.reset();  // finishes filling, then stops serving
  for (const auto& [addr, len] : maps) {
    // Nothing to do on failure: the mapping is the restore's own.
    pagewise::Env::Default()->Munmap(addr, len).IgnoreError();
  }
  delete restore;
}

int pagewise_page_server_start(const char* socket_path, pagewise_source* source,
                               const pagewise_fill_policy* policy, pagewise_page_server** out) {
  return pc::Guard([&] {
    if (socket_path == nullptr || source == nullptr || out == nullptr) {
      return pc::InvalidArgument("pagewise_page_server_start: NULL argument");
    }
    *out = nullptr;
    pagewise::ServeOptions options;
    Status s = pc::ApplyPolicy(policy, &options.fault_window_pages, &options.background_batch_pages,
                               &options.background_fill, &options.use_zeropage);
    if (!s.ok()) return pc::SetError(s);
    Result<std::unique_ptr<pagewise::PageServer>> srv =
        pagewise::PageServer::Start(socket_path, source->source, options);
    if (!srv.ok()) return pc::SetError(srv.status());
    *out = new pagewise_page_server{std::move(*srv)};
    return 0;
  });
}

int pagewise_page_server_wait(pagewise_page_server* server, size_t clients, int64_t timeout_ns) {
  return pc::Guard([&] {
    if (server == nullptr) return pc::InvalidArgument("pagewise_page_server_wait: NULL");
    return pc::WaitError(server->server->WaitClientsDone(clients, pc::ToMillis(timeout_ns)));
  });
}

uint64_t pagewise_page_server_refused(const pagewise_page_server* server) {
  return server == nullptr ? 0 : server->server->refused();
}

void pagewise_page_server_stop(pagewise_page_server* server) {
  if (server != nullptr) server->server->Stop();
}

void pagewise_page_server_destroy(pagewise_page_server* server) { delete server; }

int pagewise_lazy_client_connect(const char* socket_path, const pagewise_guest_region* regions,
                                 size_t count, const pagewise_lazy_client_options* options,
                                 pagewise_lazy_client** out) {
  return pc::Guard([&] {
    if (socket_path == nullptr || out == nullptr || (regions == nullptr && count > 0)) {
      return pc::InvalidArgument("pagewise_lazy_client_connect: NULL argument");
    }
    *out = nullptr;
    std::vector<pagewise::GuestRegion> rs(count);
    for (size_t i = 0; i < count; ++i) {
      rs[i].base_host_virt_addr = regions[i].address;
      rs[i].size = regions[i].size;
      rs[i].offset = regions[i].offset;
      rs[i].page_size = regions[i].page_size != 0 ? regions[i].page_size : pagewise::PageSize();
    }
    pagewise::LazyClientOptions o;
    if (options != nullptr) {
      if (options->on_loss != PAGEWISE_LOSS_SIGBUS && options->on_loss != PAGEWISE_LOSS_ABORT) {
        return pc::InvalidArgument("pagewise_lazy_client_connect: unknown on_loss value");
      }
      o.on_loss = options->on_loss == PAGEWISE_LOSS_ABORT ? pagewise::ServerLossPolicy::kAbort
                                                          : pagewise::ServerLossPolicy::kPoison;
      o.wait_ready_ms = options->wait_ready_ns > 0 ? pc::ToMillis(options->wait_ready_ns) : 0;
      if (options->on_server_lost != nullptr) {
        auto fn = options->on_server_lost;
        void* ctx = options->ctx;
        o.on_server_lost = [fn, ctx](const Status& s) {
          const std::string msg = s.ToString();
          fn(ctx, pc::ErrnoFor(s.code()), msg.c_str());
        };
      }
    }
    Result<std::unique_ptr<pagewise::LazyClient>> c =
        pagewise::LazyClient::Connect(socket_path, rs, o);
    if (!c.ok()) return pc::SetError(c.status());
    *out = new pagewise_lazy_client{std::move(*c)};
    return 0;
  });
}

int pagewise_lazy_client_status(const pagewise_lazy_client* client) {
  return pc::Guard([&] {
    if (client == nullptr) return pc::InvalidArgument("pagewise_lazy_client_status: NULL");
    return pc::SetError(client->client->status());
  });
}

int pagewise_lazy_client_ready(const pagewise_lazy_client* client) {
  return client != nullptr && client->client->ready() ? 1 : 0;
}

int pagewise_lazy_client_populate(pagewise_lazy_client* client) {
  return pc::Guard([&] {
    if (client == nullptr) return pc::InvalidArgument("pagewise_lazy_client_populate: NULL");
    return pc::SetError(client->client->Populate());
  });
}

int pagewise_lazy_client_wait_server_lost(pagewise_lazy_client* client, int64_t timeout_ns) {
  return pc::Guard([&] {
    if (client == nullptr) return pc::InvalidArgument("pagewise_lazy_client_wait_server_lost");
    return pc::WaitError(client->client->WaitServerLost(pc::ToMillis(timeout_ns)));
  });
}

uint64_t pagewise_lazy_client_poisoned_pages(const pagewise_lazy_client* client) {
  return client == nullptr ? 0 : client->client->poisoned_pages();
}

void pagewise_lazy_client_destroy(pagewise_lazy_client* client) { delete client; }

}  // extern "C"
