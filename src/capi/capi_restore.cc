// C API: page sources, in-process lazy restore, the page server and the lazy
// client.

#include <algorithm>
#include <cerrno>

#include "capi/capi_internal.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"

namespace pc = pagewise::capi;
using pagewise::Result;
using pagewise::Status;

struct pagewise_lazy_restore {
  std::unique_ptr<pagewise::LazyRestore> restore;  // owns the mappings it made
};

struct pagewise_page_server {
  std::unique_ptr<pagewise::PageServer> server;
};

struct pagewise_lazy_client {
  std::unique_ptr<pagewise::LazyClient> client;
};

namespace pagewise::capi {
namespace {

// The C fill policy over the C++ one's defaults, validated (out of range:
// kInvalidArgument naming the field, never clamped).
Status ApplyPolicy(const pagewise_fill_policy* p, FillPolicy* fill) {
  if (p != nullptr) {
    if (p->fault_window_pages != 0) fill->fault_window_pages = p->fault_window_pages;
    if (p->background_batch_pages != 0) fill->background_batch_pages = p->background_batch_pages;
    fill->background_fill = p->no_background_fill == 0;
    fill->use_zeropage = p->no_zeropage == 0;
  }
  return ValidateFillPolicy(*fill);
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
    Status s = pc::ApplyPolicy(policy, &options.fill);
    if (!s.ok()) return pc::SetError(s);
    Result<std::vector<pagewise::Region>> rs = pc::ToRegions(regions, count);
    if (!rs.ok()) return pc::SetError(rs.status());
    Result<std::unique_ptr<pagewise::LazyRestore>> r =
        pagewise::LazyRestore::Start(source->source, std::move(*rs), options);
    if (!r.ok()) return pc::SetError(r.status());
    *out = new pagewise_lazy_restore{std::move(*r)};
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
    return pc::SetError(restore->restore->WaitResident(pc::ToDuration(timeout_ns)));
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
    out->first_fault_ns = st.first_fault_ns;
    out->resident_ns = st.resident_ns;
    return 0;
  });
}

// Finishes, stops, and unmaps what the restore mapped (~LazyRestore).
void pagewise_lazy_restore_destroy(pagewise_lazy_restore* restore) { delete restore; }

int pagewise_page_server_start(const char* socket_path, pagewise_source* source,
                               const pagewise_fill_policy* policy, pagewise_page_server** out) {
  return pc::Guard([&] {
    if (socket_path == nullptr || source == nullptr || out == nullptr) {
      return pc::InvalidArgument("pagewise_page_server_start: NULL argument");
    }
    *out = nullptr;
    pagewise::ServeOptions options;
    Status s = pc::ApplyPolicy(policy, &options.fill);
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
    return pc::SetError(server->server->WaitClientsDone(clients, pc::ToDuration(timeout_ns)));
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
    std::vector<pagewise::Region> rs(count);
    for (size_t i = 0; i < count; ++i) {
      rs[i].address = regions[i].address;
      rs[i].length = regions[i].size;
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
      o.wait_ready = pagewise::Duration(options->wait_ready_ns > 0 ? options->wait_ready_ns : 0);
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
    return pc::SetError(client->client->WaitServerLost(pc::ToDuration(timeout_ns)));
  });
}

uint64_t pagewise_lazy_client_poisoned_pages(const pagewise_lazy_client* client) {
  return client == nullptr ? 0 : client->client->poisoned_pages();
}

void pagewise_lazy_client_destroy(pagewise_lazy_client* client) { delete client; }

}  // extern "C"
