// CRIU image framing and message decoding (see images.h).
#include "criu/images.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cstring>

#include "base/bytes.h"
#include "criu/wire.h"

namespace pagewise::criu {
namespace {

constexpr uint32_t kMaxEntryBytes = 64u << 20;  // mm of ~1M VMAs; far beyond real ones

uint32_t LoadU32(std::string_view s, size_t at) {
  uint32_t v = 0;
  std::memcpy(&v, s.data() + at, 4);
  return v;  // CRIU writes host order: little-endian on the x86-64 we support
}

// Decodes one message's fields with `on_field`, adding the entry index to
// errors.
template <typename Fn>
Status ForEachField(std::string_view msg, const std::string& where, Fn on_field) {
  WireReader r(msg);
  while (!r.done()) {
    WireField f;
    Status st = r.Next(&f);
    if (!st.ok()) return st.WithContext(where);
    st = on_field(f);
    if (!st.ok()) return st.WithContext(where);
  }
  return Status::Ok();
}

Status WantVarint(const WireField& f, const char* name) {
  if (f.type != WireType::kVarint) {
    return Status::Corruption(std::string("field ") + name + " is not a varint");
  }
  return Status::Ok();
}

}  // namespace

bool Vma::lazy_capable() const {
  return (flags & MAP_ANONYMOUS) && (flags & MAP_PRIVATE) && !(flags & MAP_LOCKED) &&
         !(flags & MAP_HUGETLB) && !(status & (kVmaAreaVdso | kVmaAreaVvar | kVmaAreaVsyscall));
}

Result<std::vector<std::string_view>> SplitImage(std::string_view file, uint32_t type_magic,
                                                 bool common_head, const std::string& name,
                                                 size_t max_entries) {
  size_t pos = 0;
  if (common_head) {
    if (file.size() < 4) return Status::Corruption(name + ": shorter than its 4-byte head magic");
    const uint32_t head = LoadU32(file, 0);
    if (head != kImgCommonMagic) {
      return Status::Corruption(name + ": head magic " + HexAddr(head) + " is not CRIU's " +
                                HexAddr(kImgCommonMagic) + " (not a CRIU image, or damaged)");
    }
    pos = 4;
  }
  if (file.size() - pos < 4) return Status::Corruption(name + ": no image type magic");
  const uint32_t magic = LoadU32(file, pos);
  if (magic != type_magic) {
    return Status::Corruption(name + ": type magic " + HexAddr(magic) + ", expected " +
                              HexAddr(type_magic) + " (wrong image type, or damaged)");
  }
  pos += 4;
  std::vector<std::string_view> out;
  while (pos < file.size()) {
    if (file.size() - pos < 4) {
      return Status::Corruption(name + ": truncated entry size at byte " + std::to_string(pos));
    }
    const uint32_t n = LoadU32(file, pos);
    pos += 4;
    if (n > kMaxEntryBytes || n > file.size() - pos) {
      return Status::Corruption(name + ": entry at byte " + std::to_string(pos - 4) + " claims " +
                                std::to_string(n) + " bytes, " + std::to_string(file.size() - pos) +
                                " remain");
    }
    if (out.size() >= max_entries) {
      return Status::Corruption(name + ": more than " + std::to_string(max_entries) + " entries");
    }
    out.push_back(file.substr(pos, n));
    pos += n;
  }
  return out;
}

Result<uint32_t> ParseInventoryImage(std::string_view file, const std::string& name) {
  PW_ASSIGN_OR_RETURN(auto entries, SplitImage(file, kInventoryMagic, false, name, 1));
  if (entries.empty()) return Status::Corruption(name + ": no inventory entry");
  bool have = false;
  uint64_t version = 0;
  PW_RETURN_IF_ERROR(ForEachField(entries[0], name, [&](const WireField& f) -> Status {
    if (f.number != 1) return Status::Ok();
    PW_RETURN_IF_ERROR(WantVarint(f, "img_version"));
    version = f.value;
    have = true;
    return Status::Ok();
  }));
  if (!have) return Status::Corruption(name + ": inventory has no img_version");
  if (version != kImagesVersion) {
    return Status::NotSupported(name + ": CRIU images version " + std::to_string(version) +
                                " is not supported (pagewise reads version " +
                                std::to_string(kImagesVersion) +
                                ", written by CRIU 1.x to 4.x); dump with such a CRIU");
  }
  return static_cast<uint32_t>(version);
}

Result<std::vector<PstreeEntry>> ParsePstreeImage(std::string_view file, const std::string& name) {
  PW_ASSIGN_OR_RETURN(auto entries, SplitImage(file, kPstreeMagic, true, name, 1 << 20));
  std::vector<PstreeEntry> out;
  for (size_t i = 0; i < entries.size(); ++i) {
    PstreeEntry e;
    std::vector<uint64_t> threads;
    uint32_t seen = 0;
    PW_RETURN_IF_ERROR(ForEachField(
        entries[i], name + " entry " + std::to_string(i), [&](const WireField& f) -> Status {
          if (f.number == 5) return AppendRepeatedVarint(f, &threads);
          if (f.number < 1 || f.number > 4) return Status::Ok();
          PW_RETURN_IF_ERROR(WantVarint(f, "pid/ppid/pgid/sid"));
          if (f.value > INT32_MAX) return Status::Corruption("pid out of range");
          const auto v = static_cast<uint32_t>(f.value);
          (f.number == 1 ? e.pid : f.number == 2 ? e.ppid : f.number == 3 ? e.pgid : e.sid) = v;
          seen |= 1u << f.number;
          return Status::Ok();
        }));
    if (!(seen & 2) || e.pid == 0) {
      return Status::Corruption(name + " entry " + std::to_string(i) + ": no pid");
    }
    // Thread ids are only counted: a zombie's entry carries a placeholder.
    for (uint64_t t : threads) {
      if (t > UINT32_MAX) return Status::Corruption(name + ": thread id beyond 32 bits");
      e.threads.push_back(static_cast<uint32_t>(t));
    }
    out.push_back(std::move(e));
  }
  if (out.empty()) return Status::Corruption(name + ": no task");
  return out;
}

Result<Pagemap> ParsePagemapImage(std::string_view file, const std::string& name,
                                  size_t page_size) {
  PW_ASSIGN_OR_RETURN(auto entries, SplitImage(file, kPagemapMagic, true, name));
  if (entries.empty()) return Status::Corruption(name + ": no pagemap_head");
  Pagemap pm;
  bool have_id = false;
  PW_RETURN_IF_ERROR(ForEachField(entries[0], name + " head", [&](const WireField& f) -> Status {
    if (f.number != 1) return Status::Ok();
    PW_RETURN_IF_ERROR(WantVarint(f, "pages_id"));
    if (f.value > UINT32_MAX) return Status::Corruption("pages_id out of range");
    pm.pages_id = static_cast<uint32_t>(f.value);
    have_id = true;
    return Status::Ok();
  }));
  if (!have_id) return Status::Corruption(name + ": pagemap_head has no pages_id");
  const uint64_t kMaxAddr = 1ull << 57;  // 5-level paging's user space
  uint64_t prev_end = 0;
  for (size_t i = 1; i < entries.size(); ++i) {
    const std::string where = name + " entry " + std::to_string(i - 1);
    PagemapEntry e;
    uint64_t compat = 0, nr = 0;
    bool has_vaddr = false, has_nr = false, has_flags = false, in_parent = false;
    PW_RETURN_IF_ERROR(ForEachField(entries[i], where, [&](const WireField& f) -> Status {
      if (f.number < 1 || f.number > 5) return Status::Ok();
      PW_RETURN_IF_ERROR(WantVarint(f, "of pagemap_entry"));
      switch (f.number) {
        case 1:
          e.vaddr = f.value;
          has_vaddr = true;
          break;
        case 2:
          compat = f.value;
          break;
        case 3:
          in_parent = f.value != 0;
          break;
        case 4:
          e.flags = static_cast<uint32_t>(f.value);
          has_flags = true;
          break;
        case 5:
          nr = f.value;
          has_nr = true;
          break;
      }
      return Status::Ok();
    }));
    if (!has_vaddr) return Status::Corruption(where + ": no vaddr");
    // Images older than the flags field: in_parent, else present.
    if (in_parent) {
      e.flags |= kPeParent;
    } else if (!has_flags) {
      e.flags = kPePresent;
    }
    e.nr_pages = has_nr ? nr : compat;
    if (e.flags & ~(kPeParent | kPeLazy | kPePresent)) {
      return Status::Corruption(where + ": unknown flags " + HexAddr(e.flags));
    }
    if ((e.flags & kPeParent) && (e.flags & kPePresent)) {
      return Status::Corruption(where + ": both PE_PARENT and PE_PRESENT");
    }
    if (e.vaddr % page_size)
      return Status::Corruption(where + ": vaddr " + HexAddr(e.vaddr) + " not page aligned");
    if (e.nr_pages == 0 || e.vaddr >= kMaxAddr || e.nr_pages > (kMaxAddr - e.vaddr) / page_size) {
      return Status::Corruption(where + ": bad range " + HexAddr(e.vaddr) + " + " +
                                std::to_string(e.nr_pages) + " pages");
    }
    if (e.vaddr < prev_end) {
      return Status::Corruption(where + ": " + HexAddr(e.vaddr) +
                                " overlaps or precedes the entry before");
    }
    prev_end = e.vaddr + e.nr_pages * page_size;
    pm.entries.push_back(e);
  }
  return pm;
}

Result<Mm> ParseMmImage(std::string_view file, const std::string& name, size_t page_size) {
  PW_ASSIGN_OR_RETURN(auto entries, SplitImage(file, kMmMagic, true, name, 1));
  if (entries.empty()) return Status::Corruption(name + ": no mm_entry");
  Mm mm;
  uint64_t prev_end = 0;
  Status vst;
  PW_RETURN_IF_ERROR(ForEachField(entries[0], name, [&](const WireField& f) -> Status {
    if (f.number != 14) return Status::Ok();
    if (f.type != WireType::kBytes) return Status::Corruption("vmas field is not a message");
    const std::string where = "vma " + std::to_string(mm.vmas.size());
    Vma v;
    uint32_t seen = 0;
    PW_RETURN_IF_ERROR(ForEachField(f.bytes, where, [&](const WireField& g) -> Status {
      if (g.number < 1 || g.number > 7) return Status::Ok();
      PW_RETURN_IF_ERROR(WantVarint(g, "of vma_entry"));
      seen |= 1u << g.number;
      switch (g.number) {
        case 1:
          v.start = g.value;
          break;
        case 2:
          v.end = g.value;
          break;
        case 3:
          v.pgoff = g.value;
          break;
        case 4:
          v.shmid = g.value;
          break;
        case 5:
          v.prot = static_cast<uint32_t>(g.value);
          break;
        case 6:
          v.flags = static_cast<uint32_t>(g.value);
          break;
        case 7:
          v.status = static_cast<uint32_t>(g.value);
          break;
      }
      return Status::Ok();
    }));
    if ((seen & 0xe) != 0xe) return Status::Corruption(where + ": no start, end or pgoff");
    if (v.start % page_size || v.end % page_size || v.end <= v.start) {
      return Status::Corruption(where + ": bad range " + HexAddr(v.start) + "-" + HexAddr(v.end));
    }
    if (v.start < prev_end)
      return Status::Corruption(where + ": overlaps or precedes the one before");
    prev_end = v.end;
    mm.vmas.push_back(v);
    return Status::Ok();
  }));
  return mm;
}

Result<std::string> ReadSmallFile(Env* env, const std::string& path, uint64_t max_bytes) {
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_CLOEXEC));
  Result<uint64_t> size = env->FileSize(fd);
  Status st = size.status();
  std::string data;
  if (st.ok() && *size > max_bytes) {
    st = Status::Corruption(path + ": " + std::to_string(*size) + " bytes, more than the " +
                            std::to_string(max_bytes) + " such an image can need");
  }
  if (st.ok()) {
    data.resize(*size);
    st = ReadFully(env, fd, data.data(), data.size(), 0);
  }
  env->Close(fd).IgnoreError();  // read-only descriptor
  if (!st.ok()) return st.WithContext(path);
  return data;
}

}  // namespace pagewise::criu
