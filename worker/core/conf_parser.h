// The configuration file language: nginx-style directives and blocks.
//
//   # comment
//   name arg1 "arg two" 'arg three';
//   block_name arg {
//       inner_directive value;
//   }
//   include conf.d/*.conf;          # glob, sorted, relative to the including file
//
// Variables: ${VAR} (error if unset), ${VAR:-default}, ${VAR:?message} (error
// with that message if unset or empty), substituted in bare words and in
// "double-quoted" strings, never in 'single-quoted' ones. "$$" is a literal "$".
// Every error message starts with "file:line: ".
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dr::conf {

struct Node {
  std::string name;
  std::vector<std::string> args;
  std::string file;  // where it was written (after includes: the included file)
  int line = 0;
  bool is_block = false;
  std::vector<Node> children;  // for blocks

  std::string where() const { return file + ":" + std::to_string(line); }
};

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

struct ParseOptions {
  EnvLookup getenv;      // defaults to ::getenv when empty
  int max_include_depth = 16;
};

// Parses `text` as if it were the file `filename` (used for error messages and
// for resolving relative includes). On error returns false and sets `err`.
bool parse_string(std::string_view text, const std::string& filename, std::vector<Node>& out,
                  std::string& err, const ParseOptions& opts = {});
bool parse_file(const std::string& path, std::vector<Node>& out, std::string& err,
                const ParseOptions& opts = {});

// Units. Sizes: 512, 64k, 64K, 1m, 1M, 1g (binary multiples: k = 1024).
// Times: 500ms, 25s, 2m, 1h, 1d; a plain number is milliseconds.
// nullopt on anything else (empty, negative, overflow, trailing junk).
std::optional<uint64_t> parse_size(std::string_view s);
std::optional<uint64_t> parse_msec(std::string_view s);

}  // namespace dr::conf
