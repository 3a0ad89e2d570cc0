// `dlsys completion bash|zsh`: the generated scripts loaded in a real bash (and zsh), their
// completion function called as the shell calls it (COMP_WORDS, COMP_CWORD).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;

namespace dlsys {
namespace {

struct Shell {
  int code;
  std::string out;
};

// Runs `script` with `shell` (bash or zsh); stdout and stderr together.
Shell run_shell(const std::string& shell, const std::string& script) {
  fs::path file =
      fs::temp_directory_path() / ("dlsys_completion_" + std::to_string(::getpid()) + "." + shell);
  std::ofstream(file) << script;
  FILE* p = popen((shell + " " + file.string() + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  fs::remove(file);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

const std::string kBin = DLSYS_BIN;

// `t WORD...` completes the last word after the others and prints "[WORDS] -> CANDIDATES".
TEST(Completion, BashCompletesSubcommandsAndFlagsFromTheCommandTree) {
  Shell r = run_shell("bash", "set -e\nsource <(" + kBin + R"sh( completion bash)
complete -p dlsys
t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _dlsys; echo "[$*] -> ${COMPREPLY[*]}"; }
t dlsys tr
t dlsys data p
t dlsys runs e
t dlsys bench s
t dlsys train --ep
t dlsys train --out runs/x --chec
t dlsys deploy create digits --model digits@1 --max-b
t dlsys models --help reg
t dlsys train spec.yaml ""
t dlsys train --out ""
t dlsys bench model.onnx s
)sh");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* line : {
           "complete -o default -F _dlsys dlsys\n",
           "[dlsys tr] -> train\n",
           "[dlsys data p] -> push pull\n",
           "[dlsys runs e] -> end\n",
           "[dlsys bench s] -> serve\n",
           "[dlsys train --ep] -> --epochs\n",
           // an option's value is skipped, so the words after it still find the flags
           "[dlsys train --out runs/x --chec] -> --checkpoint-every\n",
           "[dlsys deploy create digits --model digits@1 --max-b] -> --max-batch\n",
           // a flag that takes no value is not taken for one
           "[dlsys models --help reg] -> register\n",
           // arguments and option values: nothing, so bash completes file names (-o default)
           "[dlsys train spec.yaml ] -> \n",
           "[dlsys train --out ] -> \n",
           "[dlsys bench model.onnx s] -> \n",
       })
    EXPECT_NE(r.out.find(line), std::string::npos) << "missing: " << line << "in:\n" << r.out;
}

// Every subcommand is in the script: `dlsys ` offers them all, including this one.
TEST(Completion, BashOffersEverySubcommand) {
  Shell r = run_shell("bash", "source <(" + kBin + R"sh( completion bash)
COMP_WORDS=(dlsys ""); COMP_CWORD=1; _dlsys; echo "${COMPREPLY[*]}"
COMP_WORDS=(dlsys deploy ""); COMP_CWORD=2; _dlsys; echo "${COMPREPLY[*]}"
)sh");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("inspect run bench profile quantize train server runs models deploy "
                       "artifacts tokens data jobs search pipelines monitor alerts notebook "
                       "predict completion\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("create update list show promote rollback delete\n"), std::string::npos)
      << r.out;
}

// zsh: the script parses (zsh -n) and, loaded after compinit, registers dlsys with zsh's
// bash-compatible completion; the function, called as bashcompinit's `compgen -F` calls it,
// returns the subcommands of the words typed so far (zsh's compadd then matches the prefix).
TEST(Completion, ZshLoadsTheScriptThroughBashcompinit) {
  Shell syntax = run_shell("zsh", "zsh -n <(" + kBin + " completion zsh) && echo parsed\n");
  ASSERT_EQ(syntax.code, 0) << syntax.out;
  EXPECT_NE(syntax.out.find("parsed"), std::string::npos) << syntax.out;
  Shell r = run_shell("zsh", "autoload -U compinit && compinit -u -D\nsource <(" + kBin +
                                 R"sh( completion zsh)
print -r -- "registered: $_comps[dlsys]"
t() {
  local -a COMP_WORDS; local COMP_CWORD
  COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); words=("$@"); CURRENT=$#
  print -r -- "[$*] -> $(compgen -F _dlsys -- ${@[-1]} | tr '\n' ' ')"
}
t dlsys data p
t dlsys train --ep
)sh");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("registered: _bash_complete -o default -F _dlsys"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("[dlsys data p] -> push list versions show diff pull tag verify gc \n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("--epochs"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("[dlsys train --ep] -> inspect"), std::string::npos) << r.out;
}

TEST(Completion, UnknownShellIsRefused) {
  Shell r = run_shell("bash", kBin + " completion fish\n");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("fish"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dlsys
