// Layer: opening and checking one layer (an image file, or header and index
// bytes from elsewhere); checked chunk reads through its ChunkSource.
#include "image/layer.h"

#include <fcntl.h>

#include <algorithm>

#include "image/compression.h"

namespace pagewise::image {
namespace {

class FileChunks final : public ChunkSource {
 public:
  FileChunks(Env* env, int fd) : env_(env), fd_(fd) {}
  ~FileChunks() override {
    // Read-only descriptor: a close error loses nothing.
    env_->Close(fd_).IgnoreError();
  }
  Status ReadStored(uint64_t id, const ChunkEntry& c, uint8_t* dst, ReadPriority priority,
                    const std::string& what) const override {
    (void)id;
    (void)priority;
    Status s = ReadFully(env_, fd_, dst, c.stored_length, static_cast<off_t>(c.file_offset));
    return s.ok() ? s : s.WithContext(what);
  }

 private:
  Env* env_;
  int fd_;
};

}  // namespace

std::unique_ptr<ChunkSource> FileChunkSource(Env* env, int fd) {
  return std::make_unique<FileChunks>(env, fd);
}

Result<std::unique_ptr<Layer>> Layer::Open(Env* env, const std::string& path, uint64_t* bad_at) {
  uint64_t unused_at;
  if (bad_at == nullptr) bad_at = &unused_at;
  *bad_at = 0;
  // O_NONBLOCK: a parent path in a damaged or hostile file may name a FIFO;
  // opening must not block (reads of non-regular files then fail cleanly).
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
  std::unique_ptr<Layer> layer(new Layer(path));
  layer->source_ = FileChunkSource(env, fd);  // owns fd from here on
  PW_ASSIGN_OR_RETURN(uint64_t file_size, env->FileSize(fd));

  std::vector<uint8_t> head(std::min<uint64_t>(file_size, kMaxHeaderSize));
  Status s = ReadFully(env, fd, head.data(), head.size(), 0);
  if (!s.ok()) return s.WithContext("image " + path + ": reading the header");
  PW_ASSIGN_OR_RETURN(Header h, DecodeHeader(head.data(), head.size(), file_size, path, bad_at));

  // DecodeHeader bounded index_length by the file size.
  std::vector<uint8_t> ix(h.index_length);
  s = ReadFully(env, fd, ix.data(), ix.size(), static_cast<off_t>(h.index_offset));
  *bad_at = h.index_offset;
  if (!s.ok()) return s.WithContext("image " + path + ": reading the index");
  PW_RETURN_IF_ERROR(
      layer->Decode(head.data(), head.size(), file_size, ix.data(), ix.size(), bad_at));
  return layer;
}

Result<std::unique_ptr<Layer>> Layer::FromParts(std::string name, const uint8_t* head,
                                                size_t head_len, uint64_t file_size,
                                                const uint8_t* index, size_t index_len,
                                                std::unique_ptr<ChunkSource> source,
                                                std::string parent_name, uint64_t* bad_at) {
  uint64_t unused_at;
  if (bad_at == nullptr) bad_at = &unused_at;
  *bad_at = 0;
  std::unique_ptr<Layer> layer(new Layer(std::move(name)));
  layer->source_ = std::move(source);
  layer->parent_name_ = std::move(parent_name);
  PW_RETURN_IF_ERROR(layer->Decode(head, head_len, file_size, index, index_len, bad_at));
  return layer;
}

Status Layer::Decode(const uint8_t* head, size_t head_len, uint64_t file_size, const uint8_t* ix,
                     size_t ix_len, uint64_t* bad_at) {
  PW_ASSIGN_OR_RETURN(header_, DecodeHeader(head, head_len, file_size, path_, bad_at));
  const Header& h = header_;
  *bad_at = h.index_offset;
  if (ix_len != h.index_length) {
    return Status::Corruption("image " + path_ + ": index is " + std::to_string(ix_len) +
                              " bytes but the header says " + std::to_string(h.index_length));
  }
  if (Checksum64(ix, ix_len) != h.index_checksum) {
    return Status::Corruption("image " + path_ + ": index at file offset " +
                              std::to_string(h.index_offset) + " (" +
                              std::to_string(h.index_length) +
                              " bytes): checksum mismatch; the file is damaged: "
                              "re-create it or restore a copy");
  }
  PW_ASSIGN_OR_RETURN(index_, DecodeIndex(ix, ix_len, h, path_, bad_at));

  region_runs_.assign(index_.regions.size() + 1, 0);
  size_t k = 0;
  for (uint32_t r = 0; r < index_.regions.size(); ++r) {
    region_runs_[r] = k;
    while (k < index_.runs.size() && index_.runs[k].region == r) ++k;
  }
  region_runs_[index_.regions.size()] = k;
  return Status::Ok();
}

Layer::~Layer() = default;

LayerInfo Layer::Info() const {
  LayerInfo info;
  info.path = path_;
  info.parent = parent_name_.empty() ? index_.parent_path : parent_name_;
  info.version = header_.version;
  info.compression = static_cast<Compression>(header_.compression);
  info.stats.pages = header_.stat_pages;
  info.stats.zero_pages = header_.stat_zero_pages;
  info.stats.duplicate_pages = header_.stat_duplicate_pages;
  info.stats.stored_pages = header_.stat_stored_pages;
  info.stats.raw_bytes = header_.stat_raw_bytes;
  info.stats.compressed_bytes = header_.stat_compressed_bytes;
  info.stats.file_bytes = header_.file_size;
  return info;
}

Status Layer::ReadChunk(uint64_t id, std::vector<uint8_t>* raw, std::vector<uint8_t>* scratch,
                        ReadPriority priority) const {
  const ChunkEntry& c = index_.chunks[id];
  const std::string what = "image " + path_ + ": chunk " + std::to_string(id) + " at file offset " +
                           std::to_string(c.file_offset);
  raw->resize(c.raw_length());
  std::vector<uint8_t>* stored = c.compression == 0 ? raw : scratch;
  stored->resize(c.stored_length);
  PW_RETURN_IF_ERROR(source_->ReadStored(id, c, stored->data(), priority, what));
  if (Checksum64(stored->data(), c.stored_length) != c.stored_checksum) {
    return Status::Corruption(what +
                              ": stored data checksum mismatch; the file is damaged: "
                              "re-create it or restore a copy");
  }
  if (c.compression == 0) return Status::Ok();  // raw == stored, same checksum (index check)
  PW_RETURN_IF_ERROR(DecompressChunk(static_cast<Compression>(c.compression), stored->data(),
                                     c.stored_length, raw->data(), raw->size(), what));
  if (Checksum64(raw->data(), raw->size()) != c.raw_checksum) {
    return Status::Corruption(what +
                              ": decompressed data checksum mismatch; the file is "
                              "damaged: re-create it or restore a copy");
  }
  return Status::Ok();
}

bool Layer::FirstUserOfChunk(uint64_t id, uint32_t* region, uint64_t* offset) const {
  for (const Run& run : index_.runs) {
    if (run.kind != RunKind::kData) continue;
    for (uint64_t k = 0; k < run.count; ++k) {
      if (RefChunk(index_.refs[run.ref_index + k]) == id) {
        *region = run.region;
        *offset = (run.first_page + k) * index_.regions[run.region].page_size;
        return true;
      }
    }
  }
  return false;
}

}  // namespace pagewise::image
