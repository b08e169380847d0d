// greet: the example module of docs/modules.md. One directive, one event:
//
//   greet_text "Hello";            (server or namespace level)
//   client emits "greet" {name}  -> ack {data: {text: "Hello, <name>"}}
//
// A module includes only <depth-realtime/...> headers and exports its
// descriptor with DR_MODULE_EXPORT; everything else stays hidden.
#include <depth-realtime/module.h>

#include <string>

namespace {

// The module's configuration: one per server, cloned into every namespace
// block, whose own directives then override it.
struct GreetConf : dr::ModuleConfBase<GreetConf> {
  std::string text = "Hello";
};

// The directive table: name, where it may appear, argument counts, the setter
// (a generic one writing one field), the default and help for the generated
// reference, and whether a reload applies it without new workers.
const dr::Directive kDirectives[] = {
    {"greet_text", dr::kConfServer | dr::kConfNamespace, 1, 1, dr::set_str<&GreetConf::text>, "Hello", true,
     "What the greet event answers, before the client's name."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<GreetConf>(); }

// Runs in the master (and for `depth-realtime -t`): refuse a bad configuration here.
bool check_conf(dr::ModuleConf* c, std::string& err) {
  if (static_cast<GreetConf*>(c)->text.empty()) {
    err = "greet_text must not be empty";
    return false;
  }
  return true;
}

// Runs in each worker: register the event handler on every namespace.
bool init_worker(dr::Worker& w, const dr::Module& self) {
  w.on("", "greet", [&w, &self](dr::Socket& s, dr::Event& ev) {
    const auto* conf = static_cast<const GreetConf*>(w.conf(self, s.nsp()));
    const char* name = dr::json_str(json_array_get(ev.args.args.get(), 0), "name");
    std::string text = conf->text + ", " + (name ? name : "stranger");
    dr::ack_data(s, ev, dr::Json(json_pack("{s:s}", "text", text.c_str())));
  });
  return true;
}

const dr::Module kModule = {
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "greet", kDirectives, create_conf, check_conf, init_worker, nullptr,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
