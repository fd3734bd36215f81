// `pagewise probe [--json]`: what this kernel offers pagewise.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

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
          {"thp", {{"mode", f.thp_mode}, {"pmd_size", f.thp_size}}},
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
  std::printf("THP               %s (PMD %llu KiB)\n", f.thp_mode.c_str(),
              static_cast<unsigned long long>(f.thp_size / 1024));
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
