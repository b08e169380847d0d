// depth-realtime: a Socket.IO server built the way nginx is.
//
//   depth-realtime [-c FILE] [-M MODULE_DIR] [-t] [-T] [-v]
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "core/config.h"
#include "core/log.h"
#include "os/master.h"

namespace {

void usage(FILE* out) {
  fprintf(out,
          "usage: depth-realtime [-c FILE] [-M DIR] [-t] [-T] [-v]\n"
          "  -c FILE  configuration file (default " DR_CONF_PATH ")\n"
          "  -M DIR   where relative load_module paths resolve (default " DR_MODULE_DIR ")\n"
          "  -t       test the configuration and exit\n"
          "  -T       test the configuration and print every directive it knows\n"
          "  -v       print the version and exit\n");
}

}  // namespace

int main(int argc, char** argv) {
  dr::MasterOptions opts;
  opts.conf_path = DR_CONF_PATH;
  opts.load.module_dir = DR_MODULE_DIR;
  if (const char* dir = getenv("DEPTH_REALTIME_MODULE_DIR")) opts.load.module_dir = dir;
  bool test = false, dump = false;
  int c;
  while ((c = getopt(argc, argv, "c:M:tTvh")) != -1) {
    switch (c) {
      case 'c': opts.conf_path = optarg; break;
      case 'M': opts.load.module_dir = optarg; break;
      case 't': test = true; break;
      case 'T': test = dump = true; break;
      case 'v': printf("depth-realtime %s\n", DR_VERSION); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 1;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return 1;
  }

  std::string err;
  auto cfg = dr::load_config(opts.conf_path, opts.load, err);
  if (!cfg) {
    fprintf(stderr, "depth-realtime: [emerg] %s\n", err.c_str());
    if (test) fprintf(stderr, "depth-realtime: configuration file %s test failed\n", opts.conf_path.c_str());
    return 1;
  }
  if (test) {
    if (dump) fputs(dr::directive_reference(*cfg).c_str(), stdout);
    fprintf(stderr, "depth-realtime: the configuration file %s syntax is ok\n", opts.conf_path.c_str());
    fprintf(stderr, "depth-realtime: configuration file %s test is successful\n", opts.conf_path.c_str());
    return 0;
  }
  if (!dr::logging::open(cfg->core.error_log, cfg->core.log_level, err)) {
    fprintf(stderr, "depth-realtime: [emerg] %s\n", err.c_str());
    return 1;
  }
  return dr::run_master(std::move(cfg), opts);
}
