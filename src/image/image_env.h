// Image reading and writing through a chosen Env (internal; pagewise/image.h
// is the public side). Snapshots, live snapshots, restore sources and tests
// that inject I/O failures (ENOSPC, EIO, short writes) open and write images
// here; the public functions call these with Env::Default().
//
// Thread safety: as the public functions of the same names.
#ifndef PAGEWISE_IMAGE_IMAGE_ENV_H_
#define PAGEWISE_IMAGE_IMAGE_ENV_H_

#include <memory>
#include <string>

#include "pagewise/image.h"
#include "sys/env.h"

namespace pagewise {

// Each is the public call of the same meaning (ImageWriter::Create,
// Image::Open, VerifyImage, FlattenImage) with every file operation made
// through `env` (not null; it must outlive the returned object).
Result<std::unique_ptr<ImageWriter>> CreateImageWriter(const std::string& path,
                                                       const ImageWriteOptions& options, Env* env);
Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const ImageOpenOptions& options,
                                         Env* env);
Status VerifyImage(const std::string& path, VerifyError* error, const ProgressFn& progress,
                   Env* env);
Status FlattenImage(const std::string& in, const std::string& out, const ImageWriteOptions& options,
                    const ProgressFn& progress, Env* env);

}  // namespace pagewise

#endif  // PAGEWISE_IMAGE_IMAGE_ENV_H_
