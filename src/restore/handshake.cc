// Firecracker's UFFD handshake body: a JSON array of guest regions.
#include <nlohmann/json.hpp>
#include <string>

#include "pagewise/serve.h"

namespace pagewise {
namespace {

Status Field(const nlohmann::json& obj, size_t index, const char* name, uint64_t* out) {
  auto it = obj.find(name);
  if (it == obj.end()) {
    return Status::InvalidArgument("handshake region " + std::to_string(index) + ": missing \"" +
                                   name + "\"");
  }
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0)) {
    return Status::InvalidArgument("handshake region " + std::to_string(index) + ": \"" + name +
                                   "\" must be a non-negative integer");
  }
  *out = it->get<uint64_t>();
  return Status::Ok();
}

}  // namespace

Result<std::vector<Region>> ParseHandshake(std::string_view body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::InvalidArgument("handshake body is not valid JSON (" +
                                   std::to_string(body.size()) + " bytes)");
  }
  if (!doc.is_array()) return Status::InvalidArgument("handshake body must be a JSON array");
  std::vector<Region> out;
  for (size_t i = 0; i < doc.size(); ++i) {
    const nlohmann::json& obj = doc[i];
    if (!obj.is_object()) {
      return Status::InvalidArgument("handshake region " + std::to_string(i) + " is not an object");
    }
    Region r;
    PW_RETURN_IF_ERROR(Field(obj, i, "base_host_virt_addr", &r.address));
    PW_RETURN_IF_ERROR(Field(obj, i, "size", &r.length));
    PW_RETURN_IF_ERROR(Field(obj, i, "offset", &r.offset));
    // Newer Firecracker sends "page_size"; older sends "page_size_kib",
    // which despite its name holds bytes.
    if (obj.contains("page_size")) {
      PW_RETURN_IF_ERROR(Field(obj, i, "page_size", &r.page_size));
    } else {
      PW_RETURN_IF_ERROR(Field(obj, i, "page_size_kib", &r.page_size));
    }
    out.push_back(r);
  }
  if (out.empty()) return Status::InvalidArgument("handshake lists no regions");
  return out;
}

std::string HandshakeJson(const std::vector<Region>& regions) {
  nlohmann::json doc = nlohmann::json::array();
  for (const Region& r : regions) {
    doc.push_back({{"base_host_virt_addr", r.address},
                   {"size", r.length},
                   {"offset", r.offset},
                   {"page_size", r.page_size}});
  }
  return doc.dump();
}

}  // namespace pagewise
