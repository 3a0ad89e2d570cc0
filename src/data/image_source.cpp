// Image-folder ingest: DIR/<class>/<file>.png|.jpg|.jpeg, classes numbered in sorted order.
// Each image is decoded (libpng, libjpeg-turbo), converted to gray or RGB and resized
// (bilinear) to one shape, giving the columns image (tensor<u8> [H, W, C]), label (int64) and
// path (string, relative to DIR). A file that does not decode is a bad row naming the file.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
// jpeglib.h uses FILE without including stdio.h.
#include <jpeglib.h>
#include <png.h>
#include <cstring>

#include "data/ingest.h"

namespace dlsys::data {

namespace {

struct Image {
  int64_t h = 0, w = 0;
  int c = 0;
  std::vector<uint8_t> px;  // h * w * c
};

bool has_ext(const std::string& f, const char* ext) {
  size_t n = std::strlen(ext);
  if (f.size() < n) return false;
  return std::equal(f.end() - n, f.end(), ext, [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == b;
  });
}

Result<Image> decode_png(const std::string& path, int channels) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str()))
    return Status::Invalid("not a readable PNG ({})", img.message);
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (uint64_t(img.width) * img.height > (1u << 26)) {
    png_image_free(&img);
    return Status::Invalid("{}x{} pixels is more than the 64 Mpx limit", img.width, img.height);
  }
  Image out;
  out.h = img.height;
  out.w = img.width;
  out.c = channels;
  out.px.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.px.data(), 0, nullptr)) {
    std::string m = img.message;
    png_image_free(&img);
    return Status::Invalid("PNG decode failed ({})", m);
  }
  return out;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

Result<Image> decode_jpeg(const std::string& path, int channels) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status::IOError("cannot open: {}", strerror(errno));
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  Image out;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    std::fclose(f);
    return Status::Invalid("JPEG decode failed ({})", err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (uint64_t(cinfo.output_width) * cinfo.output_height > (1u << 26)) {
    jpeg_destroy_decompress(&cinfo);
    std::fclose(f);
    return Status::Invalid("more than the 64 Mpx limit");
  }
  out.h = cinfo.output_height;
  out.w = cinfo.output_width;
  out.c = channels;
  out.px.resize(out.h * out.w * out.c);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.px.data() + cinfo.output_scanline * out.w * out.c;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  std::fclose(f);
  return out;
}

// Bilinear resize (half-pixel centers, like OpenCV's INTER_LINEAR) into dst [h, w, c].
void resize(const Image& s, int64_t h, int64_t w, uint8_t* dst) {
  if (s.h == h && s.w == w) {
    std::memcpy(dst, s.px.data(), s.px.size());
    return;
  }
  for (int64_t y = 0; y < h; ++y) {
    double fy = std::clamp((y + 0.5) * s.h / h - 0.5, 0.0, double(s.h - 1));
    int64_t y0 = static_cast<int64_t>(fy), y1 = std::min(y0 + 1, s.h - 1);
    double wy = fy - y0;
    for (int64_t x = 0; x < w; ++x) {
      double fx = std::clamp((x + 0.5) * s.w / w - 0.5, 0.0, double(s.w - 1));
      int64_t x0 = static_cast<int64_t>(fx), x1 = std::min(x0 + 1, s.w - 1);
      double wx = fx - x0;
      for (int c = 0; c < s.c; ++c) {
        auto at = [&](int64_t yy, int64_t xx) { return double(s.px[(yy * s.w + xx) * s.c + c]); };
        double v = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) +
                   wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1));
        dst[(y * w + x) * s.c + c] = static_cast<uint8_t>(std::clamp(v + 0.5, 0.0, 255.0));
      }
    }
  }
}

std::vector<std::string> sorted_entries(const std::string& dir, bool want_dirs) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.empty() || n[0] == '.') continue;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st;
      is_dir = ::stat((dir + "/" + n).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (is_dir == want_dirs) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

class ImageSource : public RowSource {
 public:
  ImageSource(std::string dir, IngestOptions o) : dir_(std::move(dir)), o_(std::move(o)) {}

  Status open() {
    if (o_.image_channels != 1 && o_.image_channels != 3)
      return Status::Invalid("--channels must be 1 or 3, not {}", o_.image_channels);
    classes_ = sorted_entries(dir_, true);
    if (classes_.empty())
      return Status::Invalid("{}: no class sub-folders; lay images out as DIR/<class>/<file>.png",
                             dir_);
    for (size_t k = 0; k < classes_.size(); ++k)
      for (const auto& f : sorted_entries(dir_ + "/" + classes_[k], false))
        if (has_ext(f, ".png") || has_ext(f, ".jpg") || has_ext(f, ".jpeg"))
          files_.push_back({classes_[k] + "/" + f, static_cast<int64_t>(k)});
    if (files_.empty()) return Status::Invalid("{}: no .png/.jpg/.jpeg files found", dir_);
    h_ = o_.image_height;
    w_ = o_.image_width;
    if (h_ <= 0 || w_ <= 0) {
      auto first = decode(files_[0].first);
      if (!first.ok())
        return first.status().with_context(dir_ + "/" + files_[0].first +
                                           " (the first image sets the shape)");
      h_ = first->h;
      w_ = first->w;
    }
    ColumnSchema img{"image", ColumnType::kTensorU8, {h_, w_, o_.image_channels}, {}};
    schema_.columns = {img, ColumnSchema{"label", ColumnType::kInt64, {}, {}},
                       ColumnSchema{"path", ColumnType::kString, {}, {}}};
    return Status::OK();
  }

  const Schema& schema() const override { return schema_; }
  int64_t done() const override { return pos_; }
  int64_t total() const override { return files_.size(); }
  json describe() const override {
    return {{"format", "images"}, {"path", dir_}, {"files", files_.size()}, {"classes", classes_}};
  }

  Result<SourceBatch> next(int64_t max_rows, int64_t max_bytes) override {
    SourceBatch out;
    out.rows = RowBatch::empty(schema_);
    int64_t px = h_ * w_ * o_.image_channels;
    while (pos_ < files_.size() && out.rows.rows < max_rows && out.rows.rows * px < max_bytes) {
      const auto& [rel, label] = files_[pos_++];
      auto img = decode(rel);
      if (!img.ok()) {
        out.bad.push_back({int64_t(pos_), "image", img.status().message(), rel});
        continue;
      }
      if (o_.image_height <= 0 && (img->h != h_ || img->w != w_)) {
        out.bad.push_back({int64_t(pos_), "image",
                           fmt::format("{}x{} where the first image is {}x{}; give --image-size "
                                       "to resize every image",
                                       img->h, img->w, h_, w_),
                           rel});
        continue;
      }
      auto& d = out.rows.columns;
      size_t at = d[0].raw.size();
      d[0].raw.resize(at + px);
      resize(*img, h_, w_, d[0].raw.data() + at);
      d[1].i64.push_back(label);
      d[2].bytes += rel;
      d[2].offsets.push_back(d[2].bytes.size());
      ++out.rows.rows;
      out.lines.push_back(pos_);
    }
    return out;
  }

 private:
  Result<Image> decode(const std::string& rel) {
    std::string p = dir_ + "/" + rel;
    return has_ext(rel, ".png") ? decode_png(p, o_.image_channels)
                                : decode_jpeg(p, o_.image_channels);
  }

  std::string dir_;
  IngestOptions o_;
  std::vector<std::string> classes_;
  std::vector<std::pair<std::string, int64_t>> files_;
  size_t pos_ = 0;
  int64_t h_ = 0, w_ = 0;
  Schema schema_;
};

}  // namespace

Result<std::unique_ptr<RowSource>> open_images(const std::string& dir, const IngestOptions& o) {
  auto src = std::make_unique<ImageSource>(dir, o);
  DLSYS_RETURN_IF_ERROR(src->open());
  return std::unique_ptr<RowSource>(std::move(src));
}

Result<std::unique_ptr<RowSource>> open_source(const std::string& path, const std::string& format,
                                               const IngestOptions& options) {
  std::string f = format;
  if (f.empty()) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return Status::IOError("cannot read {}: {}", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
      f = "images";
    else if (has_ext(path, ".csv"))
      f = "csv";
    else if (has_ext(path, ".tsv"))
      f = "tsv";
    else if (has_ext(path, ".jsonl") || has_ext(path, ".ndjson"))
      f = "jsonl";
    else if (has_ext(path, ".npy"))
      f = "npy";
    else if (has_ext(path, "-ubyte") || has_ext(path, ".idx") || has_ext(path, ".idx3-ubyte"))
      f = "idx";
    else
      return Status::Invalid(
          "{}: cannot tell the format from the name; give --format "
          "csv|tsv|jsonl|npy|idx|images",
          path);
  }
  if (f == "csv" || f == "tsv") {
    IngestOptions o = options;
    if (f == "tsv" && !o.delimiter) o.delimiter = '\t';
    return open_csv(path, o);
  }
  if (f == "jsonl") return open_jsonl(path, options);
  if (f == "npy") return open_npy(path, options);
  if (f == "idx") return open_idx(path, options);
  if (f == "images") return open_images(path, options);
  return Status::Invalid("unknown format '{}'; use csv, tsv, jsonl, npy, idx or images", f);
}

}  // namespace dlsys::data
