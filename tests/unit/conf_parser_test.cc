// Unit tests for the configuration parser (worker/core/conf_parser.cc).
#include "core/conf_parser.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace dr::conf {
namespace {

using Args = std::vector<std::string>;

// A fake environment so tests never depend on the real one.
ParseOptions fake_env(std::map<std::string, std::string> vars) {
  ParseOptions o;
  o.getenv = [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  return o;
}

// Parses `text` as "x.conf" with an empty fake environment; fails the test
// (with the parser's message) when it does not parse.
std::vector<Node> must_parse(std::string_view text, const ParseOptions& o = fake_env({})) {
  std::vector<Node> out;
  std::string err;
  EXPECT_TRUE(parse_string(text, "x.conf", out, err, o)) << err;
  return out;
}

// Parses `text` as "x.conf", expecting failure; returns the error message.
std::string parse_error(std::string_view text, const ParseOptions& o = fake_env({})) {
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_string(text, "x.conf", out, err, o)) << "parsed but should not have: " << text;
  return err;
}

// True if `err` looks like "FILE:LINE: message" with 1 <= LINE <= max_line.
bool has_location(const std::string& err, const std::string& file, int max_line) {
  std::string prefix = file + ":";
  if (err.compare(0, prefix.size(), prefix) != 0) return false;
  size_t i = prefix.size(), start = i;
  long line = 0;
  while (i < err.size() && err[i] >= '0' && err[i] <= '9' && i - start < 9)
    line = line * 10 + (err[i++] - '0');
  if (i == start || line < 1 || line > max_line) return false;
  return err.compare(i, 2, ": ") == 0 && err.size() > i + 2;
}

// A fresh directory under /tmp, removed with its contents afterwards.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/conf_parser_test.XXXXXX";
    char* d = mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    if (d) path_ = d;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

  std::string write(const std::string& rel, const std::string& text) const {
    std::filesystem::path p = std::filesystem::path(path_) / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary);
    f << text;
    return p.string();
  }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------
// Basic syntax

TEST(ConfParser, EmptyInputAndOnlyCommentsGiveNoNodes) {
  EXPECT_TRUE(must_parse("").empty());
  EXPECT_TRUE(must_parse("   \n\t\r\n").empty());
  EXPECT_TRUE(must_parse("# just a comment\n  # another").empty());
}

TEST(ConfParser, SimpleDirectivesWithArgsFileAndLine) {
  auto nodes = must_parse("worker_processes 4;\n\nlisten 0.0.0.0:8080 backlog=511;\ndaemon;\n");
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].name, "worker_processes");
  EXPECT_EQ(nodes[0].args, Args{"4"});
  EXPECT_EQ(nodes[0].line, 1);
  EXPECT_EQ(nodes[0].file, "x.conf");
  EXPECT_FALSE(nodes[0].is_block);
  EXPECT_EQ(nodes[1].name, "listen");
  EXPECT_EQ(nodes[1].args, (Args{"0.0.0.0:8080", "backlog=511"}));
  EXPECT_EQ(nodes[1].line, 3);
  EXPECT_EQ(nodes[1].where(), "x.conf:3");
  EXPECT_EQ(nodes[2].name, "daemon");
  EXPECT_TRUE(nodes[2].args.empty());
  EXPECT_EQ(nodes[2].line, 4);
}

TEST(ConfParser, SeveralDirectivesOnOneLineAndOneDirectiveOverSeveralLines) {
  auto nodes = must_parse("a 1;b 2 ;  c\n  3\n  4\n;");
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].args, Args{"1"});
  EXPECT_EQ(nodes[1].name, "b");
  EXPECT_EQ(nodes[2].name, "c");
  EXPECT_EQ(nodes[2].args, (Args{"3", "4"}));
  EXPECT_EQ(nodes[2].line, 1);
}

TEST(ConfParser, QuotedStringsAndEscapes) {
  auto nodes = must_parse(
      "a \"two words\" 'single q' \"\" '';\n"
      "b \"q\\\"d\" 'q\\'s' \"back\\\\slash\" \"nl\\ntab\\t\" 'x\\ny';\n"
      "c \"\\.php$\" \\.html unknown\\q;\n"
      "d \"semi;brace{}#hash\";\n");
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0].args, (Args{"two words", "single q", "", ""}));
  EXPECT_EQ(nodes[1].args, (Args{"q\"d", "q's", "back\\slash", "nl\ntab\t", "x\ny"}));
  // Unknown escapes keep their backslash so regexes survive.
  EXPECT_EQ(nodes[2].args, (Args{"\\.php$", "\\.html", "unknown\\q"}));
  EXPECT_EQ(nodes[3].args, Args{"semi;brace{}#hash"});
}

TEST(ConfParser, QuotedDirectiveNameAndEscapedSeparatorInBareWord) {
  // As in nginx, "\;" does not end the word, and keeps its backslash since
  // it is not one of the known escapes.
  auto nodes = must_parse("\"quoted name\" v;\nw a\\;b \\\\;\n");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].name, "quoted name");
  EXPECT_EQ(nodes[1].args, (Args{"a\\;b", "\\"}));
}

TEST(ConfParser, MultiLineStringKeepsLineNumbersRight) {
  auto nodes = must_parse("a \"line1\nline2\nline3\";\nb;\n");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].args, Args{"line1\nline2\nline3"});
  EXPECT_EQ(nodes[0].line, 1);
  EXPECT_EQ(nodes[1].line, 4);
}

TEST(ConfParser, QuotesInsideBareWordAreLiteral) {
  auto nodes = must_parse("a b\"c\"d;\n");
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].args, Args{"b\"c\"d"});
}

TEST(ConfParser, CommentsOnlyAtTokenStart) {
  auto nodes = must_parse(
      "# leading comment\n"
      "a 1; # trailing comment with ; { } \" '\n"
      "b x#y \"#not\" '#not';  #c\n"
      "c # comment between args\n"
      "  2;\n");
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].args, Args{"1"});
  EXPECT_EQ(nodes[0].line, 2);
  EXPECT_EQ(nodes[1].args, (Args{"x#y", "#not", "#not"}));
  EXPECT_EQ(nodes[2].args, Args{"2"});
  EXPECT_EQ(nodes[2].line, 4);
}

TEST(ConfParser, NestedBlocks) {
  auto nodes = must_parse(
      "http {\n"
      "  server main {\n"
      "    location /a {\n"
      "      return 200;\n"
      "    }\n"
      "    empty {}\n"
      "  }\n"
      "  after 1;\n"
      "}\n"
      "tail;\n");
  ASSERT_EQ(nodes.size(), 2u);
  const Node& http = nodes[0];
  EXPECT_TRUE(http.is_block);
  EXPECT_TRUE(http.args.empty());
  ASSERT_EQ(http.children.size(), 2u);
  const Node& server = http.children[0];
  EXPECT_TRUE(server.is_block);
  EXPECT_EQ(server.args, Args{"main"});
  EXPECT_EQ(server.line, 2);
  ASSERT_EQ(server.children.size(), 2u);
  const Node& loc = server.children[0];
  EXPECT_EQ(loc.name, "location");
  EXPECT_EQ(loc.args, Args{"/a"});
  ASSERT_EQ(loc.children.size(), 1u);
  EXPECT_EQ(loc.children[0].name, "return");
  EXPECT_EQ(loc.children[0].line, 4);
  EXPECT_FALSE(loc.children[0].is_block);
  EXPECT_TRUE(server.children[1].is_block);
  EXPECT_TRUE(server.children[1].children.empty());
  EXPECT_EQ(http.children[1].name, "after");
  EXPECT_EQ(http.children[1].line, 8);
  EXPECT_EQ(nodes[1].name, "tail");
  EXPECT_EQ(nodes[1].line, 10);
}

TEST(ConfParser, BlockOpenedRightAfterWordAndClosedRightAfterSemicolon) {
  auto nodes = must_parse("a{b 1;}c{}");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_TRUE(nodes[0].is_block);
  ASSERT_EQ(nodes[0].children.size(), 1u);
  EXPECT_EQ(nodes[0].children[0].args, Args{"1"});
  EXPECT_TRUE(nodes[1].is_block);
}

TEST(ConfParser, DeepButReasonableNestingParses) {
  std::string text;
  for (int i = 0; i < 50; i++) text += "b {";
  text += "leaf;";
  for (int i = 0; i < 50; i++) text += "}";
  auto nodes = must_parse(text);
  const Node* n = &nodes.at(0);
  for (int i = 1; i < 50; i++) n = &n->children.at(0);
  ASSERT_EQ(n->children.size(), 1u);
  EXPECT_EQ(n->children[0].name, "leaf");
}

TEST(ConfParser, AbsurdNestingIsAnErrorNotAStackOverflow) {
  std::string text(200000, '{');
  for (size_t i = 0; i < text.size(); i += 2) text[i] = 'a';
  std::string err = parse_error(text);
  EXPECT_EQ(err, "x.conf:1: blocks nested too deeply (limit 100)");
}

// ---------------------------------------------------------------------------
// Syntax errors: exact messages

TEST(ConfParserErrors, UnexpectedCloseBrace) {
  EXPECT_EQ(parse_error("a 1;\nb 2;\n}\n"), "x.conf:3: unexpected \"}\"");
  EXPECT_EQ(parse_error("a {\n  b 1\n}\n"), "x.conf:3: unexpected \"}\"");
}

TEST(ConfParserErrors, OpenBraceWithoutName) {
  EXPECT_EQ(parse_error("a;\n\n\n\n{ b; }\n"), "x.conf:5: unexpected \"{\"");
  EXPECT_EQ(parse_error("a { { } }"), "x.conf:1: unexpected \"{\"");
}

TEST(ConfParserErrors, StraySemicolon) {
  EXPECT_EQ(parse_error("a;\n;\n"), "x.conf:2: unexpected \";\"");
  EXPECT_EQ(parse_error("a {\n ; }"), "x.conf:2: unexpected \";\"");
}

TEST(ConfParserErrors, MissingSemicolonAtEndOfFile) {
  EXPECT_EQ(parse_error("a 1;\nb 2\n"), "x.conf:2: unexpected end of file, expecting \";\" or \"}\"");
  EXPECT_EQ(parse_error("a"), "x.conf:1: unexpected end of file, expecting \";\" or \"}\"");
}

TEST(ConfParserErrors, UnclosedBlock) {
  // Reported on the last line with content.
  EXPECT_EQ(parse_error("a {\n b;\n c {\n }\n\n\n"),
            "x.conf:4: unexpected end of file, expecting \"}\"");
  EXPECT_EQ(parse_error("a {\n b;\n # trailing comment\n"),
            "x.conf:3: unexpected end of file, expecting \"}\"");
}

TEST(ConfParserErrors, UnterminatedStringReportsWhereItStarted) {
  EXPECT_EQ(parse_error("a;\nb \"abc\n\ndef\n"), "x.conf:2: unterminated string");
  EXPECT_EQ(parse_error("a 'abc"), "x.conf:1: unterminated string");
  EXPECT_EQ(parse_error("a \"abc\\"), "x.conf:1: unterminated string");
}

TEST(ConfParserErrors, JunkRightAfterQuotedString) {
  EXPECT_EQ(parse_error("a\n\"b\"c;"),
            "x.conf:2: unexpected \"c\" after quoted string, expecting a space, \";\", \"{\" or \"}\"");
  EXPECT_EQ(parse_error("a 'b'\"c\";"),
            "x.conf:1: unexpected \"\"\" after quoted string, expecting a space, \";\", \"{\" or \"}\"");
  EXPECT_EQ(parse_error(std::string("a \"b\"\x01;")),
            "x.conf:1: unexpected \"\\x01\" after quoted string, expecting a space, \";\", \"{\" or \"}\"");
}

TEST(ConfParserErrors, IncludeArgumentsAndBlock) {
  EXPECT_EQ(parse_error("include;"),
            "x.conf:1: invalid arguments in \"include\", expecting one file name or glob pattern");
  EXPECT_EQ(parse_error("\ninclude a b;"),
            "x.conf:2: invalid arguments in \"include\", expecting one file name or glob pattern");
  EXPECT_EQ(parse_error("include \"\";"),
            "x.conf:1: invalid arguments in \"include\", expecting one file name or glob pattern");
  EXPECT_EQ(parse_error("include a {}"), "x.conf:1: unexpected \"{\", \"include\" takes no block");
}

TEST(ConfParserErrors, FailedParseLeavesOutputEmpty) {
  std::vector<Node> out;
  out.push_back(Node{});
  std::string err;
  EXPECT_FALSE(parse_string("a 1;\nb {", "x.conf", out, err, fake_env({})));
  EXPECT_TRUE(out.empty());
}

TEST(ConfParserErrors, MissingTopLevelFile) {
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file("/nonexistent/dir/depth.conf", out, err));
  EXPECT_EQ(err, "/nonexistent/dir/depth.conf:0: cannot read file: No such file or directory");
}

// ---------------------------------------------------------------------------
// Environment variables

TEST(ConfParserEnv, AllForms) {
  auto o = fake_env({{"PORT", "8080"}, {"HOST", "example.org"}, {"EMPTY", ""}});
  auto nodes = must_parse(
      "a ${PORT} ${HOST}:${PORT} pre${PORT}post;\n"
      "b ${UNSET:-dflt} ${EMPTY:-dflt2} ${PORT:-dflt3} ${UNSET:-};\n"
      "c ${PORT:?need port} ${EMPTY};\n"
      "d \"http://${HOST}:${PORT}/\" \"${UNSET:-a b}\";\n",
      o);
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0].args, (Args{"8080", "example.org:8080", "pre8080post"}));
  EXPECT_EQ(nodes[1].args, (Args{"dflt", "dflt2", "8080", ""}));
  EXPECT_EQ(nodes[2].args, (Args{"8080", ""}));
  EXPECT_EQ(nodes[3].args, (Args{"http://example.org:8080/", "a b"}));
}

TEST(ConfParserEnv, DefaultMayContainSpacesInBareWord) {
  auto nodes = must_parse("a ${UNSET:-x y} z;");
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].args, (Args{"x y", "z"}));
}

TEST(ConfParserEnv, DollarDollarAndLoneDollarAreLiteral) {
  auto o = fake_env({{"A", "v"}});
  auto nodes = must_parse("a $$ $$${A} \"$${A}\" $ a$b \"x$\" $A cost$;", o);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].args, (Args{"$", "$v", "${A}", "$", "a$b", "x$", "$A", "cost$"}));
}

TEST(ConfParserEnv, SingleQuotesDoNotSubstitute) {
  auto o = fake_env({{"A", "v"}});
  auto nodes = must_parse("a '${A}' '$$' '${UNSET}';", o);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].args, (Args{"${A}", "$$", "${UNSET}"}));
}

TEST(ConfParserEnv, SubstitutedValueIsDataNeverResplit) {
  auto o = fake_env({{"NASTY", "a b; c { d } # e \"f\" ${G}"}, {"G", "g"}});
  auto nodes = must_parse("x ${NASTY} \"${NASTY}\";\ny;\n", o);
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].args, (Args{"a b; c { d } # e \"f\" ${G}", "a b; c { d } # e \"f\" ${G}"}));
  EXPECT_EQ(nodes[1].name, "y");
  EXPECT_EQ(nodes[1].line, 2);
}

TEST(ConfParserEnv, SubstitutionCanProduceTheDirectiveName) {
  auto o = fake_env({{"N", "listen"}});
  auto nodes = must_parse("${N} 80;", o);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].name, "listen");
}

TEST(ConfParserEnv, UnsetVariableErrors) {
  auto o = fake_env({{"EMPTY", ""}});
  EXPECT_EQ(parse_error("a;\nb ${NOPE};", o), "x.conf:2: environment variable \"NOPE\" is not set");
  EXPECT_EQ(parse_error("a \"\n\n${NOPE}\";", o), "x.conf:3: environment variable \"NOPE\" is not set");
  EXPECT_EQ(parse_error("a ${NOPE:?set NOPE to the port};", o), "x.conf:1: set NOPE to the port");
  EXPECT_EQ(parse_error("\na ${EMPTY:?EMPTY must not be empty};", o),
            "x.conf:2: EMPTY must not be empty");
  EXPECT_EQ(parse_error("a ${EMPTY:?};", o),
            "x.conf:1: environment variable \"EMPTY\" is not set or empty");
}

TEST(ConfParserEnv, MalformedReferences) {
  const std::string expect = "\", expecting ${NAME}, ${NAME:-default} or ${NAME:?message}";
  EXPECT_EQ(parse_error("a ${};"), "x.conf:1: invalid variable reference \"${}" + expect);
  EXPECT_EQ(parse_error("a ${1X};"), "x.conf:1: invalid variable reference \"${1X}" + expect);
  EXPECT_EQ(parse_error("a ${A B};"), "x.conf:1: invalid variable reference \"${A B}" + expect);
  EXPECT_EQ(parse_error("a ${A-b};"), "x.conf:1: invalid variable reference \"${A-b}" + expect);
  EXPECT_EQ(parse_error("a ${A:b};"), "x.conf:1: invalid variable reference \"${A:b}" + expect);
  EXPECT_EQ(parse_error("a ${A;\nb;"), "x.conf:1: unterminated variable reference, expecting \"}\"");
  EXPECT_EQ(parse_error("a \"${A\" b};"), "x.conf:1: unterminated variable reference, expecting \"}\"");
  EXPECT_EQ(parse_error("a ${"), "x.conf:1: unterminated variable reference, expecting \"}\"");
}

TEST(ConfParserEnv, DefaultsToProcessEnvironment) {
  ASSERT_EQ(setenv("DR_CONF_PARSER_TEST_VAR", "from-env", 1), 0);
  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_string("a ${DR_CONF_PARSER_TEST_VAR};", "x.conf", out, err)) << err;
  EXPECT_EQ(out.at(0).args, Args{"from-env"});
  unsetenv("DR_CONF_PARSER_TEST_VAR");
  EXPECT_FALSE(parse_string("a ${DR_CONF_PARSER_TEST_VAR};", "x.conf", out, err));
  EXPECT_EQ(err, "x.conf:1: environment variable \"DR_CONF_PARSER_TEST_VAR\" is not set");
}

// ---------------------------------------------------------------------------
// Includes

TEST(ConfParserInclude, GlobIsSortedAndSplicedInPlaceWithFileAndLine) {
  TempDir t;
  t.write("conf.d/20-b.conf", "\nb 2;\n");
  t.write("conf.d/10-a.conf", "a 1;\n");
  t.write("conf.d/30-c.conf", "# c\n\nc 3;\n");
  t.write("conf.d/ignored.txt", "not parsed {{{\n");
  std::string main = t.write("main.conf", "first;\ninclude conf.d/*.conf;\nlast;\n");

  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_file(main, out, err, fake_env({}))) << err;
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0].where(), main + ":1");
  EXPECT_EQ(out[1].name, "a");
  EXPECT_EQ(out[1].where(), t.path() + "/conf.d/10-a.conf:1");
  EXPECT_EQ(out[2].name, "b");
  EXPECT_EQ(out[2].where(), t.path() + "/conf.d/20-b.conf:2");
  EXPECT_EQ(out[3].name, "c");
  EXPECT_EQ(out[3].where(), t.path() + "/conf.d/30-c.conf:3");
  EXPECT_EQ(out[4].name, "last");
  EXPECT_EQ(out[4].where(), main + ":3");
}

TEST(ConfParserInclude, GlobMatchingNothingIsFine) {
  TempDir t;
  std::string main = t.write("main.conf", "a;\ninclude conf.d/*.conf;\ninclude nothing-[0-9].conf;\nb;\n");
  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_file(main, out, err, fake_env({}))) << err;
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].name, "b");
}

TEST(ConfParserInclude, MissingLiteralFileIsAnError) {
  TempDir t;
  std::string main = t.write("main.conf", "a;\n\ninclude nope.conf;\n");
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file(main, out, err, fake_env({})));
  EXPECT_EQ(err, main + ":3: include \"nope.conf\": No such file or directory");

  EXPECT_EQ(parse_error("include nope.conf;"),
            "x.conf:1: include \"nope.conf\": No such file or directory");
}

TEST(ConfParserInclude, IncludingADirectoryIsAnError) {
  TempDir t;
  t.write("sub/a.conf", "a;\n");
  std::string main = t.write("main.conf", "include sub;\n");
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file(main, out, err, fake_env({})));
  EXPECT_EQ(err, main + ":1: include \"sub\": Is a directory");
}

TEST(ConfParserInclude, IncludeInsideBlockAndNestedRelativeToIncludingFile) {
  TempDir t;
  // inner.conf lives in sub/ and includes "deeper.conf" relative to sub/.
  t.write("sub/inner.conf", "x 1;\ninclude deeper.conf;\nblk {\n  include deeper.conf;\n}\n");
  t.write("sub/deeper.conf", "y 2;\n");
  std::string main = t.write("main.conf", "server {\n  include sub/inner.conf;\n  z 3;\n}\n");

  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_file(main, out, err, fake_env({}))) << err;
  ASSERT_EQ(out.size(), 1u);
  const auto& kids = out[0].children;
  ASSERT_EQ(kids.size(), 4u);
  EXPECT_EQ(kids[0].name, "x");
  EXPECT_EQ(kids[0].where(), t.path() + "/sub/inner.conf:1");
  EXPECT_EQ(kids[1].name, "y");
  EXPECT_EQ(kids[1].where(), t.path() + "/sub/deeper.conf:1");
  EXPECT_EQ(kids[2].name, "blk");
  ASSERT_EQ(kids[2].children.size(), 1u);
  EXPECT_EQ(kids[2].children[0].name, "y");
  EXPECT_EQ(kids[3].name, "z");
  EXPECT_EQ(kids[3].where(), main + ":3");
}

TEST(ConfParserInclude, AbsolutePathAndPathFromEnvironment) {
  TempDir t;
  std::string abs = t.write("abs.conf", "abs;\n");
  t.write("d/e.conf", "from_env;\n");
  auto o = fake_env({{"CONF_DIR", t.path() + "/d"}});
  auto nodes = must_parse("include " + abs + ";\ninclude ${CONF_DIR}/*.conf;\n", o);
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].name, "abs");
  EXPECT_EQ(nodes[0].file, abs);
  EXPECT_EQ(nodes[1].name, "from_env");
}

TEST(ConfParserInclude, DirectoryWithGlobCharactersIsMatchedLiterally) {
  TempDir t;
  t.write("we[ir]d*/conf.d/a.conf", "a;\n");
  std::string main = t.write("we[ir]d*/main.conf", "include conf.d/*.conf;\n");
  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_file(main, out, err, fake_env({}))) << err;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].file, t.path() + "/we[ir]d*/conf.d/a.conf");
}

TEST(ConfParserInclude, SyntaxErrorInIncludedFileNamesThatFile) {
  TempDir t;
  std::string bad = t.write("bad.conf", "ok;\n\nbroken {\n");
  std::string main = t.write("main.conf", "include bad.conf;\n");
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file(main, out, err, fake_env({})));
  EXPECT_EQ(err, bad + ":3: unexpected end of file, expecting \"}\"");
}

TEST(ConfParserInclude, IncludedFileCannotCloseTheIncludingBlock) {
  TempDir t;
  std::string inc = t.write("close.conf", "a;\n}\n");
  std::string main = t.write("main.conf", "blk {\n  include close.conf;\n");
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file(main, out, err, fake_env({})));
  EXPECT_EQ(err, inc + ":2: unexpected \"}\"");
}

TEST(ConfParserInclude, CycleIsAnError) {
  TempDir t;
  std::string a = t.write("a.conf", "include b.conf;\n");
  std::string b = t.write("b.conf", "x;\ninclude a.conf;\n");
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file(a, out, err, fake_env({})));
  EXPECT_EQ(err, b + ":2: include \"a.conf\": include cycle, \"" + a + "\" is already being parsed");
}

TEST(ConfParserInclude, SelfIncludeThroughGlobIsACycle) {
  TempDir t;
  std::string main = t.write("main.conf", "include *.conf;\n");
  std::vector<Node> out;
  std::string err;
  EXPECT_FALSE(parse_file(main, out, err, fake_env({})));
  EXPECT_EQ(err, main + ":1: include \"*.conf\": include cycle, \"" + main +
                     "\" is already being parsed");
}

TEST(ConfParserInclude, DepthLimit) {
  TempDir t;
  // chain0 includes chain1 includes ... chain5 (a leaf): 5 levels of include.
  for (int i = 0; i < 5; i++)
    t.write("chain" + std::to_string(i) + ".conf", "include chain" + std::to_string(i + 1) + ".conf;\n");
  t.write("chain5.conf", "leaf;\n");
  std::string top = t.path() + "/chain0.conf";

  ParseOptions o = fake_env({});
  o.max_include_depth = 5;
  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_file(top, out, err, o)) << err;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "leaf");

  o.max_include_depth = 4;
  EXPECT_FALSE(parse_file(top, out, err, o));
  EXPECT_EQ(err, t.path() + "/chain4.conf:1: include \"chain5.conf\": includes nested too deeply (limit 4)");
}

// ---------------------------------------------------------------------------
// Robustness

TEST(ConfParserRobustness, EveryPrefixParsesOrGivesLocatedError) {
  std::string text =
      "# robustness sample\n"
      "worker_processes ${WORKERS:-4};\n"
      "listen \"0.0.0.0:${PORT}\" 'raw ${x}' esc\\;aped;\n"
      "http {\n"
      "    server main {   # comment { ; }\n"
      "        location \"/a b\" {\n"
      "            return 200 \"ok\\n\\t\\\"q\\\"\";\n"
      "            cost $$5 $ ${EMPTY:-dflt};\n"
      "        }\n"
      "        empty {}\n"
      "    }\n"
      "}\n"
      "tail '' \"\";\n";
  auto o = fake_env({{"PORT", "80"}, {"EMPTY", ""}});
  int lines = 13;
  int ok = 0;
  for (size_t len = 0; len <= text.size(); len++) {
    std::vector<Node> out;
    std::string err;
    if (parse_string(std::string_view(text).substr(0, len), "x.conf", out, err, o)) {
      ok++;
    } else {
      EXPECT_TRUE(has_location(err, "x.conf", lines)) << "prefix " << len << ": " << err;
    }
  }
  EXPECT_GT(ok, 0);
  std::vector<Node> out;
  std::string err;
  ASSERT_TRUE(parse_string(text, "x.conf", out, err, o)) << err;
  EXPECT_EQ(out.size(), 4u);
}

TEST(ConfParserRobustness, RandomGarbageNeverCrashes) {
  // Weighted towards syntax characters so the parser reaches deep states.
  const std::string alphabet = "ab_1 \t\n;;{{}}\"\"''\\\\$${{}}#:-?*";
  std::mt19937 rng(12345);  // fixed seed: reproducible
  auto o = fake_env({{"a", "x"}, {"b", ""}});
  for (int iter = 0; iter < 5000; iter++) {
    size_t len = rng() % 120;
    std::string text;
    for (size_t i = 0; i < len; i++) {
      uint32_t r = rng();
      if (r % 8 == 0)
        text += static_cast<char>((r >> 8) & 0xff);  // any byte, NUL included
      else
        text += alphabet[(r >> 8) % alphabet.size()];
    }
    std::vector<Node> out;
    std::string err;
    if (!parse_string(text, "g.conf", out, err, o)) {
      int lines = 1;
      for (char c : text) lines += c == '\n';
      EXPECT_TRUE(has_location(err, "g.conf", lines)) << "iteration " << iter << ": " << err;
    }
  }
}

TEST(ConfParserRobustness, RandomlyMutatedValidConfigNeverCrashes) {
  // Pure garbage fails early; small mutations of a valid file reach deeper.
  const std::string base =
      "a ${V:-d} \"q ${V} \\\" x\" 'y\\'z';\n"
      "b { c 1; d { e \"\"; } f $$ $; }\n"
      "# comment\n"
      "g ${W:-} ${V:?m} h\\;i;\n";
  const std::string alphabet = "ab \n;{}\"'\\${}#:-?";
  std::mt19937 rng(777);
  auto o = fake_env({{"V", "v"}, {"W", ""}});
  int parsed = 0;
  for (int iter = 0; iter < 5000; iter++) {
    std::string text = base;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; e++) {
      size_t pos = rng() % (text.size() + 1);
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: text.insert(pos, 1, c); break;
        case 1: if (pos < text.size()) text.erase(pos, 1); break;
        default: if (pos < text.size()) text[pos] = c; break;
      }
    }
    std::vector<Node> out;
    std::string err;
    if (parse_string(text, "m.conf", out, err, o)) {
      parsed++;
    } else {
      int lines = 1;
      for (char ch : text) lines += ch == '\n';
      EXPECT_TRUE(has_location(err, "m.conf", lines)) << "iteration " << iter << ": " << err;
    }
  }
  EXPECT_GT(parsed, 0);
}

// ---------------------------------------------------------------------------
// Units

TEST(ConfUnits, ParseSizeValid) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("64k"), 64u * 1024);
  EXPECT_EQ(parse_size("64K"), 64u * 1024);
  EXPECT_EQ(parse_size("1m"), 1024u * 1024);
  EXPECT_EQ(parse_size("1M"), 1024u * 1024);
  EXPECT_EQ(parse_size("1g"), 1024u * 1024 * 1024);
  EXPECT_EQ(parse_size("3G"), 3ull * 1024 * 1024 * 1024);
  EXPECT_EQ(parse_size("007"), 7u);
  EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(parse_size("17179869183g"), 17179869183ull << 30);  // largest that fits
}

TEST(ConfUnits, ParseSizeInvalid) {
  for (const char* s : {"", "k", "-1", "+1", " 5", "5 ", "1.5k", "10x", "1kb", "1KB", "1b", "1t",
                        "1kk", "0x10", "18446744073709551616", "17179869184g",
                        "18014398509481984k", "99999999999999999999999"}) {
    EXPECT_EQ(parse_size(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(ConfUnits, ParseMsecValid) {
  EXPECT_EQ(parse_msec("0"), 0u);
  EXPECT_EQ(parse_msec("500"), 500u);
  EXPECT_EQ(parse_msec("500ms"), 500u);
  EXPECT_EQ(parse_msec("25s"), 25000u);
  EXPECT_EQ(parse_msec("2m"), 120000u);
  EXPECT_EQ(parse_msec("1h"), 3600000u);
  EXPECT_EQ(parse_msec("1d"), 86400000u);
  EXPECT_EQ(parse_msec("18446744073709551615ms"), UINT64_MAX);
}

TEST(ConfUnits, ParseMsecInvalid) {
  for (const char* s : {"", "ms", "s", "-1", "-5s", "+5s", " 5", "5 ", "1.5s", "10x", "5S", "5M",
                        "5sec", "5mss", "1h30m", "1h 30m", "5msx", "18446744073709551616",
                        "18446744073709552s", "213503982335d"}) {
    EXPECT_EQ(parse_msec(s), std::nullopt) << '"' << s << '"';
  }
}

}  // namespace
}  // namespace dr::conf
