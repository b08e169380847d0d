// The configuration parser: a hand-written lexer that yields words and the
// three punctuation tokens (; { }), and a recursive descent parser on top of
// it that builds the Node tree and splices includes in place.
//
// Details the header leaves open, decided here:
//  - '#' starts a comment only at the start of a token ("a#b" is one word).
//  - A bare word ends at whitespace, ';', '{' or '}' (but not inside ${...}).
//    Quotes in the middle of a bare word are literal, as in nginx.
//  - Escapes \" \' \\ \n \t \r work in bare words and in both quote styles;
//    any other backslash pair is kept as written, so regexes like "\.php$"
//    survive.
//  - The text after ":-" or ":?" in ${...} is taken literally up to the
//    first '}' (no escapes, no nested variables).
//  - Errors at end of input are reported on the last non-blank line.
#include "core/conf_parser.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <system_error>
#include <utility>

namespace dr::conf {

namespace {

// Each nested block costs a few stack frames; this keeps hostile input like
// "a{a{a{..." from exhausting the stack.
constexpr int kMaxBlockDepth = 100;

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

std::string located(const std::string& file, int line, const std::string& msg) {
  return file + ":" + std::to_string(line) + ": " + msg;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

bool is_name_start(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

// `"x"` for printable characters, `"\xNN"` for the rest, for error messages.
std::string quote_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("\"") + c + "\"";
  static const char hex[] = "0123456789abcdef";
  return std::string("\"\\x") + hex[u >> 4] + hex[u & 15] + "\"";
}

enum class Tok { Word, Semicolon, LBrace, RBrace, End };

struct Token {
  Tok kind = Tok::End;
  std::string text;  // for words: the value after unescaping and substitution
  int line = 0;
};

class Lexer {
 public:
  Lexer(std::string_view text, const std::string& file, const EnvLookup& env)
      : s_(text), file_(file), env_(env) {}

  const std::string& file() const { return file_; }

  bool next(Token& tok, std::string& err) {
    tok.text.clear();
    skip_blanks_and_comments();
    if (p_ == s_.size()) {
      tok.kind = Tok::End;
      tok.line = eof_line();
      return true;
    }
    tok.line = line_;
    char c = s_[p_];
    switch (c) {
      case ';': tok.kind = Tok::Semicolon; p_++; return true;
      case '{': tok.kind = Tok::LBrace; p_++; return true;
      case '}': tok.kind = Tok::RBrace; p_++; return true;
      default: break;
    }
    tok.kind = Tok::Word;
    if (c == '"' || c == '\'') return quoted(c, tok.text, err);
    return bare(tok.text, err);
  }

  // The last line with anything on it: where "unexpected end of file" is
  // most useful to point at.
  int eof_line() const {
    int line = 1, last = 1;
    for (char c : s_) {
      if (c == '\n') line++;
      else if (!is_space(c)) last = line;
    }
    return last;
  }

 private:
  void skip_blanks_and_comments() {
    while (p_ < s_.size()) {
      char c = s_[p_];
      if (c == '\n') {
        line_++;
        p_++;
      } else if (is_space(c)) {
        p_++;
      } else if (c == '#') {
        while (p_ < s_.size() && s_[p_] != '\n') p_++;
      } else {
        break;
      }
    }
  }

  // Appends the meaning of "\c"; unknown escapes keep their backslash.
  void append_escape(char c, std::string& out) {
    switch (c) {
      case '"': case '\'': case '\\': out += c; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      default: out += '\\'; out += c; break;
    }
    if (c == '\n') line_++;
  }

  bool quoted(char q, std::string& out, std::string& err) {
    int start_line = line_;
    p_++;  // opening quote
    for (;;) {
      if (p_ == s_.size()) {
        err = located(file_, start_line, "unterminated string");
        return false;
      }
      char c = s_[p_];
      if (c == q) {
        p_++;
        break;
      }
      if (c == '\\') {
        if (p_ + 1 == s_.size()) {
          err = located(file_, start_line, "unterminated string");
          return false;
        }
        append_escape(s_[p_ + 1], out);
        p_ += 2;
      } else if (c == '$' && q == '"') {
        if (!dollar(out, '"', err)) return false;
      } else {
        if (c == '\n') line_++;
        out += c;
        p_++;
      }
    }
    // "a"b would be ambiguous (one argument or two?), so refuse it like nginx.
    if (p_ < s_.size()) {
      char c = s_[p_];
      if (!is_space(c) && c != ';' && c != '{' && c != '}') {
        err = located(file_, line_,
                      "unexpected " + quote_char(c) +
                          " after quoted string, expecting a space, \";\", \"{\" or \"}\"");
        return false;
      }
    }
    return true;
  }

  bool bare(std::string& out, std::string& err) {
    while (p_ < s_.size()) {
      char c = s_[p_];
      if (is_space(c) || c == ';' || c == '{' || c == '}') break;
      if (c == '\\' && p_ + 1 < s_.size()) {
        append_escape(s_[p_ + 1], out);
        p_ += 2;
      } else if (c == '$') {
        if (!dollar(out, 0, err)) return false;
      } else {
        out += c;
        p_++;
      }
    }
    return true;
  }

  // At a '$': "$$", a lone '$', or a ${...} reference. `quote` is the quote
  // character we are inside of (0 for a bare word); the reference may not
  // run past it or past the end of the line.
  bool dollar(std::string& out, char quote, std::string& err) {
    size_t n = s_.size();
    if (p_ + 1 < n && s_[p_ + 1] == '$') {
      out += '$';
      p_ += 2;
      return true;
    }
    if (p_ + 1 >= n || s_[p_ + 1] != '{') {
      out += '$';
      p_++;
      return true;
    }
    size_t body = p_ + 2, end = body;
    while (end < n && s_[end] != '}' && s_[end] != '\n' && (quote == 0 || s_[end] != quote)) end++;
    if (end == n || s_[end] != '}') {
      err = located(file_, line_, "unterminated variable reference, expecting \"}\"");
      return false;
    }
    std::string_view ref = s_.substr(p_, end + 1 - p_);  // "${...}", for messages
    std::string_view inner = s_.substr(body, end - body);
    p_ = end + 1;

    size_t name_len = 0;
    if (!inner.empty() && is_name_start(inner[0])) {
      name_len = 1;
      while (name_len < inner.size() && is_name_char(inner[name_len])) name_len++;
    }
    std::string name(inner.substr(0, name_len));
    std::string_view rest = inner.substr(name_len);
    char op = 0;
    if (name_len > 0 && rest.size() >= 2 && rest[0] == ':' && (rest[1] == '-' || rest[1] == '?')) {
      op = rest[1];
      rest.remove_prefix(2);
    } else if (name_len == 0 || !rest.empty()) {
      err = located(file_, line_,
                    "invalid variable reference \"" + std::string(ref) +
                        "\", expecting ${NAME}, ${NAME:-default} or ${NAME:?message}");
      return false;
    }

    std::optional<std::string> value = env_(name);
    if (op == 0) {
      if (!value) {
        err = located(file_, line_, "environment variable \"" + name + "\" is not set");
        return false;
      }
    } else if (!value || value->empty()) {
      if (op == '-') {
        value = std::string(rest);
      } else {
        std::string msg = rest.empty() ? "environment variable \"" + name + "\" is not set or empty"
                                       : std::string(rest);
        err = located(file_, line_, msg);
        return false;
      }
    }
    out += *value;  // data: never re-scanned for separators
    return true;
  }

  std::string_view s_;
  const std::string& file_;
  const EnvLookup& env_;
  size_t p_ = 0;
  int line_ = 1;
};

// Reads a whole file; on failure returns the errno text in `why`.
bool read_whole_file(const std::string& path, std::string& data, std::string& why) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    why = errno_text(errno);
    return false;
  }
  data.clear();
  char buf[16384];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r > 0) {
      data.append(buf, static_cast<size_t>(r));
    } else if (r == 0) {
      break;
    } else if (errno != EINTR) {
      why = errno_text(errno);
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  return true;
}

struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileId&) const = default;
};

std::optional<FileId> file_id(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

// Frees a glob_t on every return path.
struct GlobGuard {
  glob_t g{};
  ~GlobGuard() { globfree(&g); }
};

// Backslash-escapes glob metacharacters so a directory name like "a[1]"
// is matched literally when we prepend it to a pattern.
std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

class Parser {
 public:
  explicit Parser(const ParseOptions& opts) : opts_(opts) {
    env_ = opts.getenv;
    if (!env_) {
      env_ = [](const std::string& name) -> std::optional<std::string> {
        const char* v = std::getenv(name.c_str());
        if (!v) return std::nullopt;
        return std::string(v);
      };
    }
  }

  // Parses one file's text, appending its nodes to `out`. `id` is the file's
  // identity if it exists on disk, kept on a stack to detect include cycles.
  bool parse_text(std::string_view text, const std::string& file, std::optional<FileId> id,
                  std::vector<Node>& out, int include_depth, int block_depth, std::string& err) {
    if (id) open_files_.push_back(*id);
    Lexer lex(text, file, env_);
    bool ok = parse_list(lex, out, false, include_depth, block_depth, err);
    if (id) open_files_.pop_back();
    return ok;
  }

 private:
  // Parses directives until end of input (top level) or the closing '}'
  // (inside a block).
  bool parse_list(Lexer& lex, std::vector<Node>& out, bool in_block, int include_depth,
                  int block_depth, std::string& err) {
    Token tok;
    for (;;) {
      if (!lex.next(tok, err)) return false;
      switch (tok.kind) {
        case Tok::End:
          if (!in_block) return true;
          err = located(lex.file(), tok.line, "unexpected end of file, expecting \"}\"");
          return false;
        case Tok::RBrace:
          if (in_block) return true;
          err = located(lex.file(), tok.line, "unexpected \"}\"");
          return false;
        case Tok::Semicolon:
          err = located(lex.file(), tok.line, "unexpected \";\"");
          return false;
        case Tok::LBrace:
          err = located(lex.file(), tok.line, "unexpected \"{\"");
          return false;
        case Tok::Word:
          break;
      }

      Node node;
      node.name = std::move(tok.text);
      node.file = lex.file();
      node.line = tok.line;
      bool done = false;
      while (!done) {
        if (!lex.next(tok, err)) return false;
        switch (tok.kind) {
          case Tok::Word:
            node.args.push_back(std::move(tok.text));
            break;
          case Tok::Semicolon:
            done = true;
            break;
          case Tok::LBrace:
            if (node.name == "include") {
              err = located(lex.file(), tok.line, "unexpected \"{\", \"include\" takes no block");
              return false;
            }
            if (block_depth + 1 > kMaxBlockDepth) {
              err = located(lex.file(), tok.line,
                            "blocks nested too deeply (limit " + std::to_string(kMaxBlockDepth) + ")");
              return false;
            }
            node.is_block = true;
            if (!parse_list(lex, node.children, true, include_depth, block_depth + 1, err))
              return false;
            done = true;
            break;
          case Tok::RBrace:
            err = located(lex.file(), tok.line, "unexpected \"}\"");
            return false;
          case Tok::End:
            err = located(lex.file(), tok.line, "unexpected end of file, expecting \";\" or \"}\"");
            return false;
        }
      }

      if (!node.is_block && node.name == "include") {
        if (!include(node, out, include_depth, block_depth, err)) return false;
      } else {
        out.push_back(std::move(node));
      }
    }
  }

  // Splices the files named by an include directive into `out`.
  bool include(const Node& inc, std::vector<Node>& out, int include_depth, int block_depth,
               std::string& err) {
    if (inc.args.size() != 1 || inc.args[0].empty()) {
      err = located(inc.file, inc.line,
                    "invalid arguments in \"include\", expecting one file name or glob pattern");
      return false;
    }
    const std::string& pattern = inc.args[0];

    // Relative to the directory of the including file.
    std::string dir;
    if (pattern[0] != '/') {
      size_t slash = inc.file.rfind('/');
      if (slash != std::string::npos) dir = inc.file.substr(0, slash + 1);
    }

    std::vector<std::string> paths;
    if (pattern.find_first_of("*?[") == std::string::npos) {
      paths.push_back(dir + pattern);
    } else {
      GlobGuard gg;
      int rc = glob((glob_escape(dir) + pattern).c_str(), 0, nullptr, &gg.g);
      if (rc != 0 && rc != GLOB_NOMATCH) {
        err = located(inc.file, inc.line, "include \"" + pattern + "\": glob failed");
        return false;
      }
      for (size_t i = 0; i < gg.g.gl_pathc; i++) paths.emplace_back(gg.g.gl_pathv[i]);
      std::sort(paths.begin(), paths.end());  // byte order, whatever the locale
    }

    for (const std::string& path : paths) {
      std::string prefix = "include \"" + pattern + "\": ";
      if (include_depth + 1 > opts_.max_include_depth) {
        err = located(inc.file, inc.line,
                      prefix + "includes nested too deeply (limit " +
                          std::to_string(opts_.max_include_depth) + ")");
        return false;
      }
      std::optional<FileId> id = file_id(path);
      if (id && std::find(open_files_.begin(), open_files_.end(), *id) != open_files_.end()) {
        err = located(inc.file, inc.line,
                      prefix + "include cycle, \"" + path + "\" is already being parsed");
        return false;
      }
      std::string text, why;
      if (!read_whole_file(path, text, why)) {
        err = located(inc.file, inc.line, prefix + why);
        return false;
      }
      if (!parse_text(text, path, id, out, include_depth + 1, block_depth, err)) return false;
    }
    return true;
  }

  const ParseOptions& opts_;
  EnvLookup env_;
  std::vector<FileId> open_files_;
};

// Splits the digits at the front of `s` off into `v`; false on none or overflow.
bool leading_number(std::string_view& s, uint64_t& v) {
  size_t i = 0;
  v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
    i++;
  }
  if (i == 0) return false;
  s.remove_prefix(i);
  return true;
}

std::optional<uint64_t> scaled(uint64_t v, uint64_t mul) {
  if (v != 0 && mul > UINT64_MAX / v) return std::nullopt;
  return v * mul;
}

}  // namespace

bool parse_string(std::string_view text, const std::string& filename, std::vector<Node>& out,
                  std::string& err, const ParseOptions& opts) {
  out.clear();
  err.clear();
  Parser parser(opts);
  // If the name refers to a real file, a later include of it is a cycle.
  if (!parser.parse_text(text, filename, file_id(filename), out, 0, 0, err)) {
    out.clear();
    return false;
  }
  return true;
}

bool parse_file(const std::string& path, std::vector<Node>& out, std::string& err,
                const ParseOptions& opts) {
  std::string text, why;
  if (!read_whole_file(path, text, why)) {
    out.clear();
    err = located(path, 0, "cannot read file: " + why);
    return false;
  }
  return parse_string(text, path, out, err, opts);
}

std::optional<uint64_t> parse_size(std::string_view s) {
  uint64_t v;
  if (!leading_number(s, v)) return std::nullopt;
  if (s.empty()) return v;
  if (s.size() != 1) return std::nullopt;
  switch (s[0]) {
    case 'k': case 'K': return scaled(v, 1024);
    case 'm': case 'M': return scaled(v, 1024 * 1024);
    case 'g': case 'G': return scaled(v, 1024 * 1024 * 1024);
    default: return std::nullopt;
  }
}

std::optional<uint64_t> parse_msec(std::string_view s) {
  uint64_t v;
  if (!leading_number(s, v)) return std::nullopt;
  if (s.empty() || s == "ms") return v;
  if (s == "s") return scaled(v, 1000);
  if (s == "m") return scaled(v, 60 * 1000);
  if (s == "h") return scaled(v, 60 * 60 * 1000);
  if (s == "d") return scaled(v, 24 * 60 * 60 * 1000);
  return std::nullopt;
}

}  // namespace dr::conf
