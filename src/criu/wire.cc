// Protobuf wire decoding for CRIU images (see wire.h).
#include "criu/wire.h"

#include <string>

namespace pagewise::criu {

Status ReadVarint(std::string_view* data, uint64_t* v) {
  uint64_t out = 0;
  for (size_t i = 0; i < 10; ++i) {
    if (i >= data->size()) return Status::Corruption("truncated varint");
    const uint8_t b = static_cast<uint8_t>((*data)[i]);
    if (i == 9 && b > 1) return Status::Corruption("varint longer than 64 bits");
    out |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      data->remove_prefix(i + 1);
      *v = out;
      return Status::Ok();
    }
  }
  return Status::Corruption("varint longer than 10 bytes");
}

Status WireReader::Varint(uint64_t* v) {
  std::string_view rest = data_.substr(pos_);
  const size_t before = rest.size();
  Status st = ReadVarint(&rest, v);
  if (!st.ok()) return st.WithContext("at byte " + std::to_string(pos_));
  pos_ += before - rest.size();
  return Status::Ok();
}

Status WireReader::Next(WireField* f) {
  const size_t at = pos_;
  uint64_t key = 0;
  PW_RETURN_IF_ERROR(Varint(&key));
  const uint64_t number = key >> 3;
  if (number == 0 || number > 0x1fffffff) {
    return Status::Corruption("protobuf field number " + std::to_string(number) + " at byte " +
                              std::to_string(at));
  }
  f->number = static_cast<uint32_t>(number);
  f->value = 0;
  f->bytes = {};
  auto fixed = [&](size_t n) -> Status {
    if (data_.size() - pos_ < n) {
      return Status::Corruption("truncated fixed-width field " + std::to_string(number) +
                                " at byte " + std::to_string(at));
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += n;
    f->value = v;
    return Status::Ok();
  };
  switch (key & 7) {
    case 0:
      f->type = WireType::kVarint;
      return Varint(&f->value);
    case 1:
      f->type = WireType::kFixed64;
      return fixed(8);
    case 5:
      f->type = WireType::kFixed32;
      return fixed(4);
    case 2: {
      f->type = WireType::kBytes;
      uint64_t len = 0;
      PW_RETURN_IF_ERROR(Varint(&len));
      if (len > data_.size() - pos_) {
        return Status::Corruption("field " + std::to_string(number) + " at byte " +
                                  std::to_string(at) + " claims " + std::to_string(len) +
                                  " bytes, " + std::to_string(data_.size() - pos_) + " remain");
      }
      f->bytes = data_.substr(pos_, len);
      pos_ += len;
      return Status::Ok();
    }
    default:
      return Status::Corruption("unsupported protobuf wire type " + std::to_string(key & 7) +
                                " (field " + std::to_string(number) + ", byte " +
                                std::to_string(at) + ")");
  }
}

Status AppendRepeatedVarint(const WireField& f, std::vector<uint64_t>* out) {
  if (f.type == WireType::kVarint) {
    out->push_back(f.value);
    return Status::Ok();
  }
  if (f.type != WireType::kBytes) {
    return Status::Corruption("repeated field " + std::to_string(f.number) + " has wire type " +
                              std::to_string(static_cast<int>(f.type)));
  }
  std::string_view rest = f.bytes;
  while (!rest.empty()) {
    uint64_t v = 0;
    PW_RETURN_IF_ERROR(
        ReadVarint(&rest, &v).WithContext("packed field " + std::to_string(f.number)));
    out->push_back(v);
  }
  return Status::Ok();
}

}  // namespace pagewise::criu
