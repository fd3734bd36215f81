// Page sources: a flat memory file (mmap or pread), a caller-owned buffer,
// and an Image's flat view.
#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "image/chain.h"
#include "image/image_env.h"
#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "restore/restore_env.h"
#include "sys/files.h"

namespace pagewise {
namespace {

std::string SizeText(uint64_t bytes) {
  char buf[64];
  if (bytes >= (1ULL << 30)) {
    snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1ULL << 30));
  } else {
    snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1ULL << 20));
  }
  return buf;
}

// Zero-fills the part of [offset, offset+len) at or beyond `size` and
// returns how many leading bytes lie inside the source.
size_t ClipToSize(uint64_t size, uint64_t offset, void* dst, size_t len) {
  if (offset >= size) {
    std::memset(dst, 0, len);
    return 0;
  }
  const uint64_t inside = std::min<uint64_t>(len, size - offset);
  if (inside < len) std::memset(static_cast<char*>(dst) + inside, 0, len - inside);
  return static_cast<size_t>(inside);
}

class MemFileSource final : public PageSource {
 public:
  MemFileSource(Env* env, std::string path, int fd, uint64_t size, const char* map)
      : env_(env), path_(std::move(path)), fd_(fd), size_(size), map_(map) {}

  ~MemFileSource() override {
    // Teardown: nothing can be done if these fail; the process keeps going.
    if (map_ != nullptr) env_->Munmap(const_cast<char*>(map_), size_).IgnoreError();
    if (fd_ >= 0) env_->Close(fd_).IgnoreError();
  }

  uint64_t size() const override { return size_; }

  Status Read(uint64_t offset, void* dst, size_t len) const override {
    const size_t inside = ClipToSize(size_, offset, dst, len);
    if (inside == 0) return Status::Ok();
    if (map_ != nullptr) {
      std::memcpy(dst, map_ + offset, inside);
      return Status::Ok();
    }
    Status s = ReadFully(env_, fd_, dst, inside, static_cast<off_t>(offset));
    if (!s.ok()) return s.WithContext("reading memory file " + path_);
    return Status::Ok();
  }

  const void* Direct(uint64_t offset, size_t len) const override {
    if (map_ == nullptr || offset > size_ || len > size_ - offset) return nullptr;
    return map_ + offset;
  }

  std::string Describe() const override {
    return "mem-file " + path_ + " (" + SizeText(size_) + (map_ ? ", mmap)" : ", pread)");
  }

 private:
  Env* env_;
  std::string path_;
  int fd_;
  uint64_t size_;
  const char* map_;
};

class BufferSource final : public PageSource {
 public:
  BufferSource(const void* data, uint64_t size)
      : data_(static_cast<const char*>(data)), size_(size) {}
  uint64_t size() const override { return size_; }
  Status Read(uint64_t offset, void* dst, size_t len) const override {
    const size_t inside = ClipToSize(size_, offset, dst, len);
    if (inside > 0) std::memcpy(dst, data_ + offset, inside);
    return Status::Ok();
  }
  const void* Direct(uint64_t offset, size_t len) const override {
    if (offset > size_ || len > size_ - offset) return nullptr;
    return data_ + offset;
  }
  std::string Describe() const override { return "buffer (" + SizeText(size_) + ")"; }

 private:
  const char* data_;
  uint64_t size_;
};

class ImageFlatSource final : public PageSource {
 public:
  explicit ImageFlatSource(std::shared_ptr<const Image> image)
      : image_(std::move(image)), chain_(dynamic_cast<const image::ChainImage*>(image_.get())) {
    const auto& regions = image_->regions();
    for (uint32_t i = 0; i < regions.size(); ++i) {
      spans_.push_back({regions[i].offset, regions[i].length, i});
    }
    std::sort(spans_.begin(), spans_.end(),
              [](const Span& a, const Span& b) { return a.flat < b.flat; });
  }

  uint64_t size() const override { return image_->flat_size(); }

  Status Read(uint64_t offset, void* dst, size_t len) const override {
    const size_t inside = ClipToSize(size(), offset, dst, len);
    if (inside == 0) return Status::Ok();
    return image_->ReadFlat(offset, dst, inside);
  }

  Status ReadWithPriority(uint64_t offset, void* dst, size_t len,
                          ReadPriority priority) const override {
    if (chain_ == nullptr) return Read(offset, dst, len);
    const size_t inside = ClipToSize(size(), offset, dst, len);
    if (inside == 0) return Status::Ok();
    return chain_->ReadFlatWithPriority(offset, dst, inside, priority);
  }

  void WillNeed(const std::vector<uint64_t>& offsets, ReadPriority priority) const override {
    if (chain_ != nullptr) chain_->WillNeedFlat(offsets, priority);
  }

  bool can_classify() const override { return true; }

  Status ClassifyZero(uint64_t offset, size_t npages, size_t page_size,
                      std::vector<uint8_t>* zero) const override {
    // Gaps between regions and bytes beyond the flat size read as zero.
    zero->assign(npages, 1);
    const uint64_t end = offset + npages * page_size;
    std::vector<Image::SourceRun> runs;
    for (const Span& s : spans_) {
      const uint64_t lo = std::max(offset, s.flat);
      const uint64_t hi = std::min(end, s.flat + s.length);
      if (lo >= hi) continue;
      Status st = image_->ClassifyRuns(s.region, lo - s.flat, hi - lo, &runs);
      if (!st.ok()) return st.WithContext("classifying image pages");
      for (const Image::SourceRun& run : runs) {
        if (run.kind != PageSourceKind::kData) continue;
        // A page holding any stored data is copied (region page sizes may
        // differ from ours: round outwards).
        const uint64_t a = s.flat + run.offset;
        const uint64_t b = a + run.length;
        for (uint64_t p = (std::max(a, offset) - offset) / page_size;
             p < npages && offset + p * page_size < b; ++p) {
          (*zero)[p] = 0;
        }
      }
    }
    return Status::Ok();
  }

  std::string Describe() const override {
    std::string top = image_->layers().empty() ? "?" : image_->layers().front().path;
    return "image " + top + " (flat " + SizeText(size()) + ", " +
           std::to_string(image_->layers().size()) + " layer(s))";
  }

 private:
  struct Span {
    uint64_t flat;
    uint64_t length;
    uint32_t region;
  };
  std::shared_ptr<const Image> image_;
  // The image reader itself when the image is one (always, unless a caller
  // brings its own Image): it takes priorities and fetch hints.
  const image::ChainImage* chain_;
  std::vector<Span> spans_;
};

}  // namespace

Status PageSource::ClassifyZero(uint64_t offset, size_t npages, size_t page_size,
                                std::vector<uint8_t>* zero) const {
  zero->assign(npages, 0);
  for (size_t i = 0; i < npages; ++i) {
    if (offset + i * page_size >= size()) (*zero)[i] = 1;
  }
  return Status::Ok();
}

Result<std::shared_ptr<PageSource>> OpenMemFileSource(const std::string& path,
                                                      MemFileAccess access) {
  return OpenMemFileSource(path, access, Env::Default());
}

Result<std::shared_ptr<PageSource>> OpenMemFileSource(const std::string& path, MemFileAccess access,
                                                      Env* env) {
  // O_NONBLOCK: a FIFO must not block the open (it is refused below).
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
  Result<sys::FileIdentity> id = sys::IdentifyFd(fd);
  if (id.ok() && !id->regular()) {
    env->Close(fd).IgnoreError();  // refusing it
    return Status::InvalidArgument("memory file " + path + " is a " + id->TypeName() +
                                   ", not a regular file");
  }
  Result<uint64_t> size = env->FileSize(fd);
  if (!size.ok()) {
    env->Close(fd).IgnoreError();  // already failing; report the size error
    return size.status().WithContext("memory file " + path);
  }
  const char* map = nullptr;
  if (access == MemFileAccess::kMmap && *size > 0) {
    Result<void*> m = env->Mmap(nullptr, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (!m.ok()) {
      env->Close(fd).IgnoreError();  // already failing; report the mmap error
      return m.status().WithContext("mapping memory file " + path + " (try MemFileAccess::kPread)");
    }
    map = static_cast<const char*>(*m);
  }
  return std::shared_ptr<PageSource>(std::make_shared<MemFileSource>(env, path, fd, *size, map));
}

std::shared_ptr<PageSource> MemorySource(const void* data, uint64_t size) {
  return std::make_shared<BufferSource>(data, size);
}

std::shared_ptr<PageSource> ImageSource(std::shared_ptr<const Image> image) {
  return std::make_shared<ImageFlatSource>(std::move(image));
}

Result<std::shared_ptr<PageSource>> OpenImageSource(const std::string& path) {
  return OpenImageSource(path, Env::Default());
}

Result<std::shared_ptr<PageSource>> OpenImageSource(const std::string& path, Env* env) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> image, OpenImage(path, ImageOpenOptions{}, env));
  return ImageSource(std::shared_ptr<const Image>(std::move(image)));
}

std::string TracePathFor(const std::string& source_path) { return source_path + ".trace"; }

}  // namespace pagewise
