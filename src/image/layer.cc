// Layer: opening and checking one image file; checked chunk reads.
#include "image/layer.h"

#include <fcntl.h>

#include <algorithm>

#include "image/compression.h"

namespace pagewise::image {

Result<std::unique_ptr<Layer>> Layer::Open(Env* env, const std::string& path, uint64_t* bad_at) {
  uint64_t unused_at;
  if (bad_at == nullptr) bad_at = &unused_at;
  *bad_at = 0;
  // O_NONBLOCK: a parent path in a damaged or hostile file may name a FIFO;
  // opening must not block (reads of non-regular files then fail cleanly).
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
  std::unique_ptr<Layer> layer(new Layer(env, fd, path));
  PW_ASSIGN_OR_RETURN(uint64_t file_size, env->FileSize(fd));

  std::vector<uint8_t> head(std::min<uint64_t>(file_size, kMaxHeaderSize));
  Status s = ReadFully(env, fd, head.data(), head.size(), 0);
  if (!s.ok()) return s.WithContext("image " + path + ": reading the header");
  PW_ASSIGN_OR_RETURN(layer->header_,
                      DecodeHeader(head.data(), head.size(), file_size, path, bad_at));
  const Header& h = layer->header_;

  // DecodeHeader bounded index_length by the file size.
  std::vector<uint8_t> ix(h.index_length);
  s = ReadFully(env, fd, ix.data(), ix.size(), static_cast<off_t>(h.index_offset));
  *bad_at = h.index_offset;
  if (!s.ok()) return s.WithContext("image " + path + ": reading the index");
  if (Checksum64(ix.data(), ix.size()) != h.index_checksum) {
    return Status::Corruption("image " + path + ": index at file offset " +
                              std::to_string(h.index_offset) + " (" +
                              std::to_string(h.index_length) +
                              " bytes): checksum mismatch; the file is damaged: "
                              "re-create it or restore a copy");
  }
  PW_ASSIGN_OR_RETURN(layer->index_, DecodeIndex(ix.data(), ix.size(), h, path, bad_at));

  const Index& index = layer->index_;
  layer->region_runs_.assign(index.regions.size() + 1, 0);
  size_t k = 0;
  for (uint32_t r = 0; r < index.regions.size(); ++r) {
    layer->region_runs_[r] = k;
    while (k < index.runs.size() && index.runs[k].region == r) ++k;
  }
  layer->region_runs_[index.regions.size()] = k;
  return layer;
}

Layer::~Layer() {
  // Read-only descriptor: a close error loses nothing.
  env_->Close(fd_).IgnoreError();
}

LayerInfo Layer::Info() const {
  LayerInfo info;
  info.path = path_;
  info.parent = index_.parent_path;
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

Status Layer::ReadChunk(uint64_t id, std::vector<uint8_t>* raw,
                        std::vector<uint8_t>* scratch) const {
  const ChunkEntry& c = index_.chunks[id];
  const std::string what = "image " + path_ + ": chunk " + std::to_string(id) + " at file offset " +
                           std::to_string(c.file_offset);
  raw->resize(c.raw_length());
  std::vector<uint8_t>* stored = c.compression == 0 ? raw : scratch;
  stored->resize(c.stored_length);
  Status s =
      ReadFully(env_, fd_, stored->data(), c.stored_length, static_cast<off_t>(c.file_offset));
  if (!s.ok()) return s.WithContext(what);
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
