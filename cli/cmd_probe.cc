// `pagewise probe [--json]`: what this kernel offers pagewise.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "pagewise/probe.h"
#include "pagewise/tracker.h"

namespace pagewise::cli {
namespace {

nlohmann::json ProbeJson(const KernelFeatures& f) {
  nlohmann::json backends = nlohmann::json::array();
  for (const BackendInfo& b : DescribeBackends(f)) {
    backends.push_back(
        {{"name", b.name}, {"available", b.available}, {"atomic", b.atomic}, {"reason", b.reason}});
  }
  nlohmann::json kinds = nlohmann::json::array();
  for (const MemoryKindSupport& k : f.memory_kinds) {
    kinds.push_back({{"capability", MemoryCapabilityName(k.capability)},
                     {"supported", k.supported},
                     {"memory", k.memory},
                     {"reason", k.reason}});
  }
  nlohmann::json pools = nlohmann::json::array();
  for (const HugePagePoolInfo& p : f.huge_page_pools) {
    pools.push_back({{"page_size", p.page_size},
                     {"total", p.total},
                     {"free", p.free},
                     {"reserved", p.reserved},
                     {"surplus", p.surplus},
                     {"available", p.available()}});
  }
  return {{"kernel", f.kernel_release},
          {"uffd",
           {{"available", f.uffd_available},
            {"dev_userfaultfd", f.uffd_dev_node},
            {"features", UffdFeatureNames(f.uffd_features)},
            {"features_mask", f.uffd_features},
            {"reason", f.uffd_reason}}},
          {"pagemap_scan", f.pagemap_scan},
          {"pagemap_scan_reason", f.pagemap_scan_reason},
          {"soft_dirty", f.soft_dirty},
          {"soft_dirty_reason", f.soft_dirty_reason},
          {"thp", {{"mode", f.thp_mode}, {"pmd_size", f.thp_size}, {"shmem", f.thp_shmem_mode}}},
          {"memory_kinds", kinds},
          {"hugetlbfs", {{"default_page_size", f.default_huge_page_size}, {"pools", pools}}},
          {"backends", backends}};
}

void PrintTable(const KernelFeatures& f) {
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::printf("kernel            %s\n", f.kernel_release.c_str());
  std::printf("userfaultfd       %s%s%s\n", yes(f.uffd_available),
              f.uffd_dev_node ? " (also /dev/userfaultfd)" : "",
              f.uffd_available ? "" : ("  " + f.uffd_reason).c_str());
  if (f.uffd_available) {
    std::printf("  features        ");
    int col = 0;
    for (const std::string& n : UffdFeatureNames(f.uffd_features)) {
      if (col++ && col % 6 == 1) std::printf("\n                  ");
      std::printf("%s ", n.c_str());
    }
    std::printf("\n");
  }
  std::printf("PAGEMAP_SCAN      %s%s\n", yes(f.pagemap_scan),
              f.pagemap_scan ? "" : ("  " + f.pagemap_scan_reason).c_str());
  std::printf("soft-dirty        %s%s\n", yes(f.soft_dirty),
              f.soft_dirty ? "" : ("  " + f.soft_dirty_reason).c_str());
  std::printf("THP               %s (PMD %llu KiB), shmem %s\n", f.thp_mode.c_str(),
              static_cast<unsigned long long>(f.thp_size / 1024), f.thp_shmem_mode.c_str());
  std::printf("\n%-19s %-10s %s\n", "memory kind", "supported", "memory / reason");
  for (const MemoryKindSupport& k : f.memory_kinds) {
    std::printf("%-19s %-10s %s\n", std::string(MemoryCapabilityName(k.capability)).c_str(),
                yes(k.supported), (k.supported ? k.memory : k.reason).c_str());
  }
  std::printf("\nhugetlbfs pools (default %llu KiB)\n",
              static_cast<unsigned long long>(f.default_huge_page_size >> 10));
  if (f.huge_page_pools.empty()) std::printf("  none\n");
  for (const HugePagePoolInfo& p : f.huge_page_pools) {
    std::printf("  %8llu KiB  total %llu  free %llu  reserved %llu  surplus %llu\n",
                static_cast<unsigned long long>(p.page_size >> 10),
                static_cast<unsigned long long>(p.total), static_cast<unsigned long long>(p.free),
                static_cast<unsigned long long>(p.reserved),
                static_cast<unsigned long long>(p.surplus));
  }
  std::printf("\n%-15s %-10s %-7s %s\n", "backend", "available", "atomic", "notes");
  for (const BackendInfo& b : DescribeBackends(f)) {
    std::printf("%-15s %-10s %-7s %s\n", b.name.c_str(), yes(b.available), yes(b.atomic),
                b.reason.c_str());
  }
}

CommandRegistration reg("probe", "Show which kernel features and tracking backends work here",
                        [](CLI::App* app) -> RunFn {
                          auto json = std::make_shared<bool>(false);
                          app->add_flag("--json", *json, "Print one JSON object");
                          return [json]() -> int {
                            const KernelFeatures& f = Features();
                            if (*json) {
                              std::cout << ProbeJson(f).dump(2) << std::endl;
                            } else {
                              PrintTable(f);
                            }
                            return 0;
                          };
                        });

}  // namespace
}  // namespace pagewise::cli
