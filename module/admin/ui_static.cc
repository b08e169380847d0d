#include "ui_static.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <memory>

namespace dr::admin {
namespace {

const char* content_type(const std::string& path) {
  static const std::pair<const char*, const char*> types[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "application/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".png", "image/png"},
      {".svg", "image/svg+xml"},
      {".map", "application/json"},
      {".json", "application/json"},
      {".ico", "image/x-icon"},
      {".woff2", "font/woff2"},
      {".woff", "font/woff"},
  };
  for (auto& [ext, type] : types) {
    size_t n = strlen(ext);
    if (path.size() > n && path.compare(path.size() - n, n, ext) == 0) return type;
  }
  return "application/octet-stream";
}

// Read when asked (the dashboard loads a few files, once): no copy per worker.
void serve_file(const std::string& file, HttpRespond respond) {
  HttpResponse res;
  std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(file.c_str(), "rb"), fclose);
  if (!f) {
    res.status = 404;
    res.body = "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"Not found\"}}";
    return respond(std::move(res));
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f.get())) > 0) res.body.append(buf, n);
  res.content_type = content_type(file);
  respond(std::move(res));
}

// Routes are exact paths: one per file, found when the worker starts.
void add_files(Worker& w, const std::string& dir, const std::string& url, int depth) {
  if (depth > 8) return;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
  if (!d) return;
  while (const dirent* e = readdir(d.get())) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    std::string path = dir + "/" + name;
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      add_files(w, path, url + name + "/", depth + 1);
    } else if (S_ISREG(st.st_mode)) {
      w.route(Listener::Main, "GET", url + name,
              [path](const HttpRequest&, HttpRespond respond) { serve_file(path, std::move(respond)); });
    }
  }
}

}  // namespace

void serve_static(Worker& w, const std::string& dir, const std::string& prefix) {
  add_files(w, dir, prefix, 0);
  std::string index = dir + "/index.html";
  w.route(Listener::Main, "GET", prefix,
          [index](const HttpRequest&, HttpRespond respond) { serve_file(index, std::move(respond)); });
  // index.html names its files relatively: /admin-ui must become /admin-ui/.
  w.route(Listener::Main, "GET", prefix.substr(0, prefix.size() - 1),
          [prefix](const HttpRequest&, HttpRespond respond) {
            HttpResponse res;
            res.status = 301;
            res.content_type = "text/plain";
            res.headers.emplace_back("Location", prefix);
            respond(std::move(res));
          });
}

}  // namespace dr::admin
