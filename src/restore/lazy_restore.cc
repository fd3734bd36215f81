// LazyRestore: maps and registers the regions, then hands them to an Engine.
#include <sys/mman.h>

#include <memory>
#include <string>
#include <utility>

#include "pagewise/probe.h"
#include "pagewise/restore.h"
#include "restore/engine.h"
#include "restore/restore_env.h"
#include "sys/userfaultfd.h"

namespace pagewise {
namespace {

class LazyRestoreImpl final : public LazyRestore {
 public:
  // `mapped`: indices of the regions this restore mapped (it owns them).
  LazyRestoreImpl(std::vector<Region> regions, std::vector<size_t> mapped,
                  std::unique_ptr<restore::Engine> engine, Env* env)
      : regions_(std::move(regions)),
        mapped_(std::move(mapped)),
        engine_(std::move(engine)),
        env_(env) {}

  ~LazyRestoreImpl() override {
    // Never stop serving with pages missing: closing the userfaultfd would
    // let the kernel zero-fill them. The error (if any) was already
    // reported to whoever called Finish/WaitResident or on_resident.
    Finish().IgnoreError();
    // A forked copy unmaps nothing: its memory is the child's, still served
    // by the parent's restore, and the child did not ask for it to go.
    if (engine_->forked_copy()) return;
    std::lock_guard<std::mutex> lk(finish_mu_);
    for (size_t i : mapped_) {
      // Destructor: nowhere to report a failed munmap.
      env_->Munmap(reinterpret_cast<void*>(regions_[i].address), regions_[i].length).IgnoreError();
    }
  }

  const std::vector<Region>& regions() const override { return regions_; }
  char* data(size_t region) const override {
    return reinterpret_cast<char*>(regions_.at(region).address);
  }

  void Release() override {
    std::lock_guard<std::mutex> lk(finish_mu_);
    mapped_.clear();
  }

  Status WaitResident(Duration timeout) override { return engine_->WaitResident(timeout); }
  // (In a child forked during the restore, every method that would wait
  // returns at once: the parent's restore serves the child.)
  bool resident() const override { return engine_->resident(); }

  Status Finish() override {
    if (engine_->forked_copy()) {
      engine_->Stop();  // drops, without touching, what only the parent has
      return Status::FailedPrecondition("forked copy of a restore: the parent serves this child");
    }
    std::lock_guard<std::mutex> lk(finish_mu_);
    if (!finished_) {
      engine_->EnableBackground();
      finish_status_ = engine_->WaitResident(kNoTimeout);
      engine_->Stop();
      finished_ = true;
    }
    return finish_status_;
  }

  RestoreStats stats() const override { return engine_->Stats(); }
  WorkingSetTrace trace() const override { return engine_->Trace(); }

 private:
  const std::vector<Region> regions_;
  std::vector<size_t> mapped_;  // guarded by finish_mu_: owned mappings
  std::unique_ptr<restore::Engine> engine_;
  Env* const env_;
  std::mutex finish_mu_;
  bool finished_ = false;  // guarded by finish_mu_
  Status finish_status_;   // guarded by finish_mu_
};

Status Validate(const PageSource& source, const std::vector<Region>& regions) {
  const uint64_t ps = PageSize();
  if (regions.empty()) return Status::InvalidArgument("lazy restore: no regions given");
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    const std::string where = "lazy restore region " + std::to_string(i);
    if (r.length == 0 || r.length % ps != 0 || r.offset % ps != 0 || r.address % ps != 0) {
      return Status::InvalidArgument(where + ": length, offset and address must be " +
                                     "non-zero/page aligned (page size " + std::to_string(ps) +
                                     ")");
    }
    if (r.offset > source.size() || r.length > source.size() - r.offset) {
      return Status::InvalidArgument(where + ": [" + std::to_string(r.offset) + ", +" +
                                     std::to_string(r.length) + ") lies beyond the source (" +
                                     source.Describe() + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<LazyRestore>> LazyRestore::Start(std::shared_ptr<const PageSource> source,
                                                        std::vector<Region> regions,
                                                        const RestoreOptions& options) {
  return StartLazyRestore(std::move(source), std::move(regions), options, Env::Default());
}

Result<std::unique_ptr<LazyRestore>> StartLazyRestore(std::shared_ptr<const PageSource> source,
                                                      std::vector<Region> regions,
                                                      const RestoreOptions& options, Env* env) {
  if (source == nullptr) return Status::InvalidArgument("lazy restore: no source");
  PW_RETURN_IF_ERROR(ValidateFillPolicy(options.fill).WithContext("lazy restore"));
  PW_RETURN_IF_ERROR(Validate(*source, regions));

  std::vector<size_t> mapped;  // regions we mapped (to undo on failure)
  auto unmap_ours = [&] {
    for (size_t i : mapped) {
      env->Munmap(reinterpret_cast<void*>(regions[i].address), regions[i].length).IgnoreError();
    }
  };
  for (size_t i = 0; i < regions.size(); ++i) {
    Region& r = regions[i];
    if (r.address != 0) continue;
    Result<void*> m = env->Mmap(nullptr, r.length, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!m.ok()) {
      unmap_ours();
      return m.status().WithContext("lazy restore: mapping region " + std::to_string(i));
    }
    r.address = reinterpret_cast<uint64_t>(*m);
    mapped.push_back(i);
  }

  restore::EngineOptions eo;
  eo.env = env;
  eo.fill = options.fill;
  eo.release_when_resident = options.release_when_resident;
  eo.on_resident = options.on_resident;
  eo.private_fd_table = true;
  auto engine = std::make_unique<restore::Engine>(std::move(source), std::move(eo));
  restore::Engine* e = engine.get();

  // Runs on the engine's server thread, in its private fd table, so that
  // the userfaultfd never appears in the table the program forks.
  auto setup = [&]() -> Status {
    // FORK, REMAP, REMOVE and UNMAP keep the restore correct while the
    // program forks, moves, drops and unmaps memory: without them a child
    // would silently read zeros, and dropped ranges could be refilled.
    sys::Userfaultfd::Options uo;
    uo.required_features = uffd_feature::kEventFork | uffd_feature::kEventRemap |
                           uffd_feature::kEventRemove | uffd_feature::kEventUnmap;
    uo.optional_features = uffd_feature::kThreadId | uffd_feature::kPoison;
    uo.env = env;
    Result<sys::Userfaultfd> uffd = sys::Userfaultfd::Open(uo);
    if (!uffd.ok()) return uffd.status().WithContext("lazy restore");
    std::vector<restore::SpaceRegion> space_regions;
    for (size_t i = 0; i < regions.size(); ++i) {
      const Region& r = regions[i];
      Status st = uffd->Register(r.address, r.length, sys::kRegisterMissing);
      if (!st.ok()) {
        // Closing the uffd (on return) unregisters what was registered.
        return st.WithContext("lazy restore: registering region " + std::to_string(i) +
                              " (it must be private anonymous read/write memory)");
      }
      space_regions.push_back({r.address, r.length, r.offset});
    }
    e->AddSpace(std::move(*uffd), space_regions);
    return Status::Ok();
  };
  Status st = engine->Start(setup);
  if (st.ok() && options.fill.wait_for_prefetch && !options.fill.prefetch.empty()) {
    // REAP-style: the recorded working set is in place before the program
    // resumes, so replaying it takes no demand faults.
    st = engine->WaitPrefetched(kNoTimeout)
             .WithContext("lazy restore: installing the prefetch list");
  }
  if (!st.ok()) {
    engine.reset();
    unmap_ours();
    return st;
  }
  return std::unique_ptr<LazyRestore>(std::make_unique<LazyRestoreImpl>(
      std::move(regions), std::move(mapped), std::move(engine), env));
}

}  // namespace pagewise
