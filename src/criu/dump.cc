// CriuDump: layout and page data of a CRIU dump directory (see dump.h).
#include "criu/dump.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "base/bytes.h"

namespace pagewise::criu {
namespace {

constexpr uint64_t kMaxSmallImage = 256ull << 20;  // pagemap/mm/pstree/inventory
constexpr int kMaxParents = 64;                    // a loop of parent links ends here

// A mapped pages-N.img.
struct PagesFile {
  std::string path;
  const char* map = nullptr;
  uint64_t size = 0;
};

// Where a piece of the flat view lives.
struct Segment {
  uint64_t flat = 0;
  uint64_t len = 0;
  const char* data = nullptr;  // inside a PagesFile mapping
};

// One dump directory of a chain: its pagemaps (loaded on demand) and pages
// files, and its parent.
class Layer {
 public:
  Layer(Env* env, std::string dir, int depth) : env_(env), dir_(std::move(dir)), depth_(depth) {}
  ~Layer() {
    for (auto& [id, f] : files_) {
      // Read-only mappings: nothing to do if unmapping fails.
      if (f.map) env_->Munmap(const_cast<char*>(f.map), f.size).IgnoreError();
    }
  }

  const std::string& dir() const { return dir_; }
  int depth() const { return depth_; }

  // The pagemap of pid in this layer, with each entry's offset in its
  // pages file (present entries only).
  struct TaskMap {
    Pagemap pm;
    std::vector<uint64_t> pages_off;
  };
  Result<const TaskMap*> Map(uint32_t pid, size_t ps) {
    auto it = maps_.find(pid);
    if (it != maps_.end()) return &it->second;
    const std::string path = dir_ + "/pagemap-" + std::to_string(pid) + ".img";
    PW_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(env_, path, kMaxSmallImage));
    PW_ASSIGN_OR_RETURN(Pagemap pm, ParsePagemapImage(bytes, path, ps));
    TaskMap tm;
    uint64_t off = 0;
    for (const PagemapEntry& e : pm.entries) {
      tm.pages_off.push_back(off);
      if (e.flags & kPePresent) off += e.nr_pages * ps;
    }
    tm.pm = std::move(pm);
    return &maps_.emplace(pid, std::move(tm)).first->second;
  }

  Result<const PagesFile*> File(uint32_t id) {
    auto it = files_.find(id);
    if (it != files_.end()) return &it->second;
    PagesFile f;
    f.path = dir_ + "/pages-" + std::to_string(id) + ".img";
    Result<int> fd = env_->Open(f.path, O_RDONLY | O_CLOEXEC);
    if (!fd.ok()) {
      return fd.status().WithContext("the dump's page data " + f.path +
                                     " (copy the whole dump directory)");
    }
    Result<uint64_t> size = env_->FileSize(*fd);
    Status st = size.status();
    if (st.ok() && *size > 0) {
      f.size = *size;
      Result<void*> m = env_->Mmap(nullptr, f.size, PROT_READ, MAP_PRIVATE, *fd, 0);
      st = m.status();
      if (m.ok()) f.map = static_cast<const char*>(*m);
    }
    env_->Close(*fd).IgnoreError();  // the mapping keeps the file
    if (!st.ok()) return st.WithContext(f.path);
    return &files_.emplace(id, std::move(f)).first->second;
  }

  // The parent layer (nullptr if none).
  Result<Layer*> Parent() {
    if (parent_checked_) return parent_.get();
    parent_checked_ = true;
    const std::string link = dir_ + "/parent";
    Result<std::string> inv = ReadSmallFile(env_, link + "/inventory.img", kMaxSmallImage);
    if (!inv.ok() && inv.status().code() == Code::kNotFound) return nullptr;
    if (!inv.ok()) return inv.status().WithContext("parent dump");
    PW_RETURN_IF_ERROR(ParseInventoryImage(*inv, link + "/inventory.img").status());
    if (depth_ + 1 >= kMaxParents) {
      return Status::Corruption(dir_ + ": more than " + std::to_string(kMaxParents) +
                                " parent dumps (a loop of parent links?)");
    }
    parent_ = std::make_unique<Layer>(env_, link, depth_ + 1);
    return parent_.get();
  }

  // Appends the segments holding [vaddr, vaddr+len) of pid, starting at
  // flat offset `flat`.
  Status Resolve(uint32_t pid, uint64_t vaddr, uint64_t len, uint64_t flat, size_t ps,
                 std::vector<Segment>* out) {
    PW_ASSIGN_OR_RETURN(const TaskMap* tm, Map(pid, ps));
    const auto& es = tm->pm.entries;
    // First entry ending after vaddr.
    size_t i = std::upper_bound(es.begin(), es.end(), vaddr,
                                [&](uint64_t a, const PagemapEntry& e) {
                                  return a < e.vaddr + e.nr_pages * ps;
                                }) -
               es.begin();
    uint64_t at = vaddr;
    const uint64_t end = vaddr + len;
    while (at < end) {
      if (i >= es.size() || es[i].vaddr > at) {
        return Status::Corruption(dir_ + "/pagemap-" + std::to_string(pid) +
                                  ".img has no entry for page " + HexAddr(at) +
                                  " that a later dump says is in this (parent) dump");
      }
      const PagemapEntry& e = es[i];
      const uint64_t e_end = e.vaddr + e.nr_pages * ps;
      const uint64_t piece = std::min(end, e_end) - at;
      if (e.flags & kPePresent) {
        PW_ASSIGN_OR_RETURN(const PagesFile* f, File(tm->pm.pages_id));
        const uint64_t off = tm->pages_off[i] + (at - e.vaddr);
        if (off > f->size || piece > f->size - off) {
          return Status::Corruption(f->path + " is " + std::to_string(f->size) + " bytes; pid " +
                                    std::to_string(pid) + " page " + HexAddr(at) +
                                    " needs bytes up to " + std::to_string(off + piece) +
                                    " (truncated dump)");
        }
        out->push_back({flat + (at - vaddr), piece, f->map + off});
      } else if (e.flags & kPeParent) {
        PW_ASSIGN_OR_RETURN(Layer * parent, Parent());
        if (parent == nullptr) {
          return Status::NotFound(dir_ + ": pid " + std::to_string(pid) + " page " + HexAddr(at) +
                                  " is in the parent dump (PE_PARENT), but " + dir_ +
                                  "/parent is missing");
        }
        PW_RETURN_IF_ERROR(parent->Resolve(pid, at, piece, flat + (at - vaddr), ps, out));
      } else {
        return Status::NotSupported(
            dir_ + ": pid " + std::to_string(pid) + " page " + HexAddr(at) +
            " is lazy but not in the images (dumped with `criu dump --lazy-pages`: its pages "
            "stay in the dumped process); dump without --lazy-pages");
      }
      at += piece;
      ++i;
    }
    return Status::Ok();
  }

  size_t Depth() {
    Result<Layer*> p = Parent();
    return 1 + ((p.ok() && *p) ? (*p)->Depth() : 0);
  }

 private:
  Env* env_;
  std::string dir_;
  int depth_;
  std::map<uint32_t, TaskMap> maps_;
  std::map<uint32_t, PagesFile> files_;
  bool parent_checked_ = false;
  std::unique_ptr<Layer> parent_;
};

class DumpImpl final : public CriuDump {
 public:
  DumpImpl(Env* env, std::string dir) : env_(env), dir_(std::move(dir)), top_(env, dir_, 0) {}

  Status Load(bool data) {
    const size_t ps = PageSize();
    Result<std::string> inv = ReadSmallFile(env_, dir_ + "/inventory.img", kMaxSmallImage);
    if (!inv.ok()) {
      if (inv.status().code() == Code::kNotFound) {
        return Status::NotFound(dir_ +
                                " is not a CRIU dump directory (no inventory.img): give the "
                                "directory `criu dump -D` wrote");
      }
      return inv.status();
    }
    PW_RETURN_IF_ERROR(ParseInventoryImage(*inv, dir_ + "/inventory.img").status());
    const std::string pst_path = dir_ + "/pstree.img";
    PW_ASSIGN_OR_RETURN(std::string pst, ReadSmallFile(env_, pst_path, kMaxSmallImage));
    PW_ASSIGN_OR_RETURN(std::vector<PstreeEntry> tree, ParsePstreeImage(pst, pst_path));
    for (const PstreeEntry& p : tree) {
      for (const DumpTask& t : tasks_) {
        if (t.pid == p.pid)
          return Status::Corruption(pst_path + ": pid " + std::to_string(p.pid) + " twice");
      }
      DumpTask t;
      t.pid = p.pid;
      t.threads = p.threads.size();
      t.first_region = regions_.size();
      PW_RETURN_IF_ERROR(AddTask(&t, ps));
      t.nregions = regions_.size() - t.first_region;
      tasks_.push_back(t);
    }
    digest_ = LayoutDigest(regions_);
    for (uint32_t id : pages_ids_) {
      Result<int> fd =
          env_->Open(dir_ + "/pages-" + std::to_string(id) + ".img", O_RDONLY | O_CLOEXEC);
      if (!fd.ok()) continue;  // reported by Resolve when data is wanted
      Result<uint64_t> size = env_->FileSize(*fd);
      if (size.ok()) pages_bytes_ += *size;
      env_->Close(*fd).IgnoreError();  // read-only descriptor
    }
    if (!data) return Status::Ok();
    has_data_ = true;
    for (const DumpRegion& r : regions_) {
      PW_RETURN_IF_ERROR(top_.Resolve(r.pid, r.address, r.length, r.flat_offset, ps, &segs_));
    }
    chain_ = top_.Depth();
    return Status::Ok();
  }

  const std::string& dir() const override { return dir_; }
  const std::vector<DumpTask>& tasks() const override { return tasks_; }
  const std::vector<DumpRegion>& regions() const override { return regions_; }
  const DumpTask* FindTask(uint32_t pid) const override {
    for (const DumpTask& t : tasks_) {
      if (t.pid == pid) return &t;
    }
    return nullptr;
  }
  uint64_t flat_size() const override { return flat_size_; }
  uint64_t layout_digest() const override { return digest_; }
  uint64_t pages_file_bytes() const override { return pages_bytes_; }
  size_t chain_length() const override { return chain_; }

  Status Read(uint64_t offset, void* dst, size_t len) const override {
    if (!has_data_) return Status::FailedPrecondition(dir_ + ": opened without page data");
    char* out = static_cast<char*>(dst);
    auto it = std::upper_bound(segs_.begin(), segs_.end(), offset,
                               [](uint64_t o, const Segment& s) { return o < s.flat; });
    if (it != segs_.begin()) --it;
    while (len > 0) {
      if (it == segs_.end() || offset < it->flat) {
        const uint64_t gap = it == segs_.end() ? len : std::min<uint64_t>(len, it->flat - offset);
        std::memset(out, 0, gap);
        out += gap, offset += gap, len -= gap;
        continue;
      }
      if (offset >= it->flat + it->len) {
        ++it;
        continue;
      }
      const uint64_t n = std::min<uint64_t>(len, it->flat + it->len - offset);
      std::memcpy(out, it->data + (offset - it->flat), n);
      out += n, offset += n, len -= n;
      ++it;
    }
    return Status::Ok();
  }

  const void* Direct(uint64_t offset, size_t len) const override {
    if (!has_data_) return nullptr;
    auto it = std::upper_bound(segs_.begin(), segs_.end(), offset,
                               [](uint64_t o, const Segment& s) { return o < s.flat; });
    if (it == segs_.begin()) return nullptr;
    --it;
    if (offset + len > it->flat + it->len) return nullptr;
    return it->data + (offset - it->flat);
  }

 private:
  Status AddTask(DumpTask* t, size_t ps) {
    const std::string mm_path = dir_ + "/mm-" + std::to_string(t->pid) + ".img";
    Result<std::string> mm_bytes = ReadSmallFile(env_, mm_path, kMaxSmallImage);
    if (!mm_bytes.ok() && mm_bytes.status().code() == Code::kNotFound) {
      return Status::Ok();  // a zombie or a kernel thread: no memory
    }
    if (!mm_bytes.ok()) return mm_bytes.status();
    PW_ASSIGN_OR_RETURN(Mm mm, ParseMmImage(*mm_bytes, mm_path, ps));
    PW_ASSIGN_OR_RETURN(const Layer::TaskMap* tm, top_.Map(t->pid, ps));
    pages_ids_.push_back(tm->pm.pages_id);
    size_t v = 0;
    for (const PagemapEntry& e : tm->pm.entries) {
      uint64_t at = e.vaddr;
      const uint64_t end = e.vaddr + e.nr_pages * ps;
      while (at < end) {
        while (v < mm.vmas.size() && mm.vmas[v].end <= at) ++v;
        if (v >= mm.vmas.size() || mm.vmas[v].start > at) {
          return Status::Corruption("pagemap-" + std::to_string(t->pid) + ".img: page " +
                                    HexAddr(at) + " lies in no VMA of " + mm_path);
        }
        const Vma& vma = mm.vmas[v];
        const uint64_t piece = std::min(end, vma.end) - at;
        DumpRegion r;
        r.pid = t->pid;
        r.address = at;
        r.length = piece;
        r.flat_offset = flat_size_;
        r.flags = e.flags;
        r.prot = vma.prot;
        if (r.lazy() && !vma.lazy_capable()) r.flags &= ~kPeLazy;  // CRIU registers none there
        if (r.lazy()) t->lazy_pages += piece / ps;
        regions_.push_back(r);
        flat_size_ += piece;
        at += piece;
      }
    }
    return Status::Ok();
  }

  Env* env_;
  std::string dir_;
  Layer top_;
  std::vector<DumpTask> tasks_;
  std::vector<DumpRegion> regions_;
  std::vector<uint32_t> pages_ids_;
  std::vector<Segment> segs_;  // sorted by flat offset
  uint64_t flat_size_ = 0;
  uint64_t digest_ = 0;
  uint64_t pages_bytes_ = 0;
  size_t chain_ = 1;
  bool has_data_ = false;
};

}  // namespace

uint64_t LayoutDigest(const std::vector<DumpRegion>& regions) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0x63726975);
  for (const DumpRegion& r : regions) {
    const uint64_t row[5] = {r.pid, r.address, r.length, r.flat_offset, r.lazy() ? 1u : 0u};
    XXH64_update(st, row, sizeof(row));
  }
  const uint64_t d = XXH64_digest(st);
  XXH64_freeState(st);
  return d;
}

Result<std::shared_ptr<CriuDump>> CriuDump::Open(const std::string& dir,
                                                 const OpenOptions& options) {
  Env* env = options.env ? options.env : Env::Default();
  auto d = std::make_shared<DumpImpl>(env, dir);
  PW_RETURN_IF_ERROR(d->Load(options.data));
  return std::shared_ptr<CriuDump>(std::move(d));
}

}  // namespace pagewise::criu
