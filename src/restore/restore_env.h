// Lazy restore, page sources, traces, the page server and the lazy client
// through a chosen Env (internal; pagewise/restore.h and pagewise/serve.h
// are the public side). Each function is the public call of the same
// meaning with every kernel and file operation made through `env` (not
// null; it must outlive what is returned). Tests inject EAGAIN, EEXIST,
// short copies and failing calls here.
//
// Thread safety: as the public functions.
#ifndef PAGEWISE_RESTORE_RESTORE_ENV_H_
#define PAGEWISE_RESTORE_RESTORE_ENV_H_

#include <memory>
#include <string>
#include <vector>

#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "sys/env.h"

namespace pagewise {

Result<std::shared_ptr<PageSource>> OpenMemFileSource(const std::string& path, MemFileAccess access,
                                                      Env* env);
Result<std::shared_ptr<PageSource>> OpenImageSource(const std::string& path, Env* env);

Status WriteTrace(const std::string& path, const WorkingSetTrace& trace, Env* env);
Result<WorkingSetTrace> ReadTrace(const std::string& path, Env* env);

// LazyRestore::Start.
Result<std::unique_ptr<LazyRestore>> StartLazyRestore(std::shared_ptr<const PageSource> source,
                                                      std::vector<Region> regions,
                                                      const RestoreOptions& options, Env* env);

// PageServer::Start.
Result<std::unique_ptr<PageServer>> StartPageServer(const std::string& socket_path,
                                                    std::shared_ptr<const PageSource> source,
                                                    const ServeOptions& options, Env* env);

// LazyClient::Connect.
Result<std::unique_ptr<LazyClient>> ConnectLazyClient(const std::string& socket_path,
                                                      const std::vector<Region>& regions,
                                                      const LazyClientOptions& options, Env* env);

}  // namespace pagewise

#endif  // PAGEWISE_RESTORE_RESTORE_ENV_H_
