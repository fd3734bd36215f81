// Pause points: the explorer's listener and the variant switch.
#include "base/pause_point.h"

namespace pagewise::pause {
namespace internal {

std::atomic<bool> g_attached{false};
std::atomic<uint32_t> g_variant{0};

namespace {
std::atomic<PauseListener*> g_listener{nullptr};
}  // namespace

void Reach(const char* point) {
  PauseListener* l = g_listener.load(std::memory_order_acquire);
  if (l != nullptr) l->Reached(point);
}

}  // namespace internal

void Attach(PauseListener* listener) {
  internal::g_listener.store(listener, std::memory_order_release);
  internal::g_attached.store(listener != nullptr, std::memory_order_release);
}

void Detach() { Attach(nullptr); }

void SetVariant(Variant v) {
  internal::g_variant.store(static_cast<uint32_t>(v), std::memory_order_release);
}

}  // namespace pagewise::pause
