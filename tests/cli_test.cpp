// End-to-end tests of the moejet binary: exit codes, messages and files a user sees.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "moejet/core/blas_runtime.h"
#include "moejet/core/fs.h"
#include "moejet/core/json_util.h"
#include "moejet/io/checkpoint_file.h"
#include "moejet/io/state_dict.h"
#include "moejet/kernels/precision.h"
#include "moejet/models/vit.h"
#include "moejet/train/distributed.h"
#include "test_util.h"

using namespace moejet;

namespace {

struct RunResult {
  int code;
  std::string output;
};

RunResult run_shell(const std::string& command) {
  std::string cmd = command + " 2>&1";
  RunResult r{-1, ""};
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) {
    r.output.append(buf, n);
  }
  int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

RunResult run(const std::string& args) {
  return run_shell(std::string(MOEJET_BINARY) + " " + args);
}

bool contains(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

}  // namespace

TEST(Cli, ComputingCommandsShortenOpenblasIdleSpinUnlessTheUserSetIt) {
  // The test suite runs with OMP_NUM_THREADS=1, which OpenBLAS reads too: the commands here get two
  // threads of their own, since the spin is reported (and matters) only with BLAS workers.
  if (openblas_num_threads() < 0 || std::thread::hardware_concurrency() < 2 || !openblas_thread_timeout().empty()) {
    GTEST_SKIP() << "needs OpenBLAS, 2 CPUs and no OPENBLAS_THREAD_TIMEOUT in the environment";
  }
  moejet::testing::TempDir dir;
  { std::ofstream(dir.file("broken.json")) << "{"; }
  const std::string two_threads = "OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 ";
  const std::string broken = " --config " + dir.file("broken.json");
  // Fails after the start-up report, which names the spin.
  auto r = run_shell(two_threads + std::string(MOEJET_BINARY) + " train" + broken);
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, std::string("idle spin 2^") + kOpenblasThreadTimeout + " cycles")) << r.output;
  EXPECT_EQ(r.output.find("libtorch "), r.output.rfind("libtorch ")) << "one start-up report: " << r.output;
  auto user = run_shell(two_threads + "OPENBLAS_THREAD_TIMEOUT=20 " + std::string(MOEJET_BINARY) + " train" + broken);
  EXPECT_TRUE(contains(user.output, "idle spin 2^20 cycles")) << user.output;
  // info prints only: not worth a second start.
  auto info = run_shell(two_threads + std::string(MOEJET_BINARY) + " info --model vit_tiny_patch16_224");
  EXPECT_TRUE(contains(info.output, "idle spin: OpenBLAS default")) << info.output;
}

TEST(Cli, ComputingCommandsRunOpenblasAvx2KernelsWhereItsCpuDetectionFallsBack) {
  // OpenBLAS 0.3.21 takes e.g. an Emerald Rapids Xeon for a Prescott (SSE3 kernels, ~3x slower):
  // the computing commands then start afresh with OPENBLAS_CORETYPE set, unless the user set it.
  if (openblas_core_name().empty()) {
    GTEST_SKIP() << "the BLAS is not OpenBLAS";
  }
  moejet::testing::TempDir dir;
  { std::ofstream(dir.file("broken.json")) << "{"; }
  const std::string broken = " --config " + dir.file("broken.json");
  const std::string needed = openblas_coretype_needed();  // as this test process loaded OpenBLAS
  auto r = run("train" + broken);
  EXPECT_TRUE(contains(r.output, "BLAS: OpenBLAS " + (needed.empty() ? openblas_core_name() : needed) + " ("))
      << "needed '" << needed << "': " << r.output;
  EXPECT_EQ(r.output.find("libtorch "), r.output.rfind("libtorch ")) << "one start-up report: " << r.output;
  auto user = run_shell("OPENBLAS_CORETYPE=Haswell " + std::string(MOEJET_BINARY) + " train" + broken);
  EXPECT_TRUE(contains(user.output, "BLAS: OpenBLAS Haswell (")) << user.output;
}

TEST(Cli, InfoPrintsThePapersParamsAndFlops) {
  auto r = run("info --model vit_tiny_patch16_224");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "Param (M)  5.72")) << r.output;
  EXPECT_TRUE(contains(r.output, "FLOPs (G)  1.25")) << r.output;
  EXPECT_TRUE(contains(r.output, "BLAS")) << r.output;  // the start-up line reports the BLAS
  // The papers' MoE models: V-JetMoE-T, and Soft MoE-T (197 experts of hidden 768 in blocks 7-12).
  auto v = run("info --model " + std::string(MOEJET_SOURCE_DIR) + "/configs/paper/vjetmoe_tiny.json");
  ASSERT_EQ(v.code, 0) << v.output;
  EXPECT_TRUE(contains(v.output, "Param (M)  265.41")) << v.output;
  auto s = run("info --model " + std::string(MOEJET_SOURCE_DIR) + "/configs/paper/softmoe_tiny.json");
  ASSERT_EQ(s.code, 0) << s.output;
  EXPECT_TRUE(contains(s.output, "Param (M)  353.89")) << s.output;
  EXPECT_TRUE(contains(s.output, "197 experts (hidden 768)")) << s.output;
  auto c = run("info --model convnext_tiny");
  ASSERT_EQ(c.code, 0) << c.output;
  EXPECT_TRUE(contains(c.output, "Param (M)  28.59")) << c.output;
  EXPECT_TRUE(contains(c.output, "FLOPs (G)  4.456")) << c.output;  // fvcore: 4.47
  auto j = run("--log-level error info --model vit_small_patch16_224 --set num_classes=10 --json");
  ASSERT_EQ(j.code, 0) << j.output;
  auto parsed = json::parse(j.output);
  EXPECT_EQ(parsed["model"]["num_classes"], 10);
  EXPECT_GT(parsed["params"].get<int64_t>(), 21000000);
}

TEST(Cli, BadInputGivesOneClearErrorAndNonZeroExit) {
  moejet::testing::TempDir dir;
  { std::ofstream(dir.file("bad.json")) << R"({"optim": {"lerning_rate": 0.1}})"; }
  auto r = run("train --config " + dir.file("bad.json"));
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "optim.lerning_rate")) << r.output;

  { std::ofstream(dir.file("broken.json")) << R"({"optim": )"; }
  r = run("train --config " + dir.file("broken.json"));
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "broken.json")) << r.output;

  { std::ofstream(dir.file("junk.safetensors")) << "this is not a checkpoint"; }
  r = run("eval " + dir.file("junk.safetensors") + " --model vit_tiny_patch16_224");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "junk.safetensors")) << r.output;

  r = run("info --model vit_gigantic");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "vit_gigantic")) << r.output;

  // Sizes that would build for minutes (a million blocks) or start 100k threads end at once.
  r = run("train --config " + std::string(MOEJET_SOURCE_DIR) +
          "/configs/vit_fmnist.json --set model.depth=1048576 --out " + dir.file("deep"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "sizes beyond any ViT (depth 1048576 <= 1024")) << r.output;
  // An MLP ratio that leaves no hidden units was libtorch's "from is out of bounds for float".
  r = run("train --config " + std::string(MOEJET_SOURCE_DIR) +
          "/configs/vit_fmnist.json --set model.mlp_ratio=0.001 --out " + dir.file("thin"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "model.mlp_ratio: 0.001 x embed_dim 192 gives an MLP of 0 hidden units")) << r.output;
  r = run("info --model vit_tiny_patch16_224 --threads 100000");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--threads")) << r.output;
}

TEST(Cli, RunsAreNeverOverwrittenAndAKilledRunResumesBitIdentical) {
  moejet::testing::TempDir dir;
  const std::string train = "train -q --config " + std::string(MOEJET_SOURCE_DIR) +
                            "/configs/vit_fmnist.json --set data.train_limit=128 --set data.eval_limit=64"
                            " --set model.depth=1 --set model.embed_dim=16 --set model.num_heads=2 --batch-size 64";
  auto r = run(train + " --epochs 3 --out " + dir.file("ref"));  // 2 steps an epoch
  ASSERT_EQ(r.code, 0) << r.output;
  const auto best = read_file_bytes(dir.file("ref/best.safetensors"));

  // The same folder again: refused, and the run in it untouched.
  r = run(train + " --out " + dir.file("ref") + " --epochs 1");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "already holds a run")) << r.output;
  EXPECT_EQ(read_file_bytes(dir.file("ref/best.safetensors")), best);

  // Killed (SIGKILL) between the state and the weights of step 4, or after both: --resume ends
  // bit-identical to the uninterrupted run.
  for (std::string point : {"state-written", "weights-written"}) {
    const std::string out = dir.file(point);
    r = run_shell("MOEJET_FAULT=" + point + ":4 " + std::string(MOEJET_BINARY) + " " + train + " --epochs 3 --out " +
                  out);
    EXPECT_NE(r.code, 0) << point << ": the fault did not fire\n" << r.output;
    EXPECT_TRUE(file_exists(out + "/last.state-4.pt")) << point;
    r = run(train + " --epochs 3 --out " + out + " --resume");
    ASSERT_EQ(r.code, 0) << point << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, point == "state-written" ? "after step 2: epoch 2/3, batch 0" : "after step 4"))
        << r.output;
    EXPECT_EQ(read_file_bytes(out + "/last.safetensors"), read_file_bytes(dir.file("ref/last.safetensors"))) << point;
    EXPECT_FALSE(file_exists(out + "/last.state-4.pt")) << "older state files are pruned";
    EXPECT_TRUE(file_exists(out + "/last.state-6.pt"));
  }

  // Ctrl-C inside an epoch (after step 3 of 6) ends the run at once with a resumable checkpoint
  // of that step; a SIGKILL there loses only the steps since the last checkpoint. Either way
  // --resume ends bit-identical.
  for (std::string point : {"interrupt", "step"}) {
    const std::string out = dir.file(point);
    r = run_shell("MOEJET_FAULT=" + point + ":3 " + std::string(MOEJET_BINARY) + " " + train + " --epochs 3 --out " +
                  out);
    if (point == "interrupt") {
      EXPECT_EQ(r.code, 130) << r.output;
      EXPECT_TRUE(contains(r.output, "interrupted (Ctrl-C) after step 3")) << r.output;
      EXPECT_TRUE(file_exists(out + "/last.state-3.pt"));
      io::Metadata meta;
      io::read_safetensors(out + "/last.safetensors", &meta);
      EXPECT_EQ(meta.at("moejet.step"), "3");
    } else {
      EXPECT_NE(r.code, 0) << r.output;
      EXPECT_FALSE(file_exists(out + "/last.state-3.pt"));
    }
    r = run(train + " --epochs 3 --out " + out + " --resume");
    ASSERT_EQ(r.code, 0) << point << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, point == "interrupt" ? "after step 3: epoch 2/3, batch 1" : "after step 2"))
        << r.output;
    EXPECT_EQ(read_file_bytes(out + "/last.safetensors"), read_file_bytes(dir.file("ref/last.safetensors"))) << point;
  }
  // Ctrl-C on the last step: the run is complete and evaluated, as if no signal had come.
  r = run_shell("MOEJET_FAULT=interrupt:6 " + std::string(MOEJET_BINARY) + " " + train + " --epochs 3 --out " +
                dir.file("late"));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "epoch 3/3 eval")) << r.output;
  EXPECT_EQ(read_file_bytes(dir.file("late/last.safetensors")), read_file_bytes(dir.file("ref/last.safetensors")));

  // --overwrite replaces the run on purpose; with no --out each run gets its own folder.
  r = run(train + " --out " + dir.file("ref") + " --epochs 1 --overwrite");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(read_file_bytes(dir.file("ref/best.safetensors")), best);
  r = run_shell("cd " + dir.path.string() + " && " + std::string(MOEJET_BINARY) + " " + train + " --epochs 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "runs/vit_fmnist-")) << r.output;
  int runs = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("runs"))) {
    runs += e.path().filename().string().rfind("vit_fmnist-", 0) == 0;
  }
  EXPECT_EQ(runs, 1);
}

// train.checkpoint_every: the resumable checkpoint only every N epochs, at the end and when the
// run is stopped; a kill in between resumes from the last one written, bit-identical as ever.
TEST(Cli, CheckpointEveryNEpochsWritesLessAndAKilledRunStillResumesBitIdentical) {
  moejet::testing::TempDir dir;
  const std::string train = "train -q --config " + std::string(MOEJET_SOURCE_DIR) +
                            "/configs/vit_fmnist.json --set data.train_limit=128 --set data.eval_limit=64"
                            " --set model.depth=1 --set model.embed_dim=16 --set model.num_heads=2 --batch-size 64"
                            " --epochs 3 --set train.eval_at_start=true";  // 2 steps an epoch
  auto r = run(train + " --out " + dir.file("ref"));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto reference = read_file_bytes(dir.file("ref/last.safetensors"));
  const auto with = [&](const std::string& fault, const std::string& every, const std::string& out,
                        const std::string& extra = "") {
    return run_shell((fault.empty() ? "" : "MOEJET_FAULT=" + fault + " ") + std::string(MOEJET_BINARY) + " " + train +
                     " --set train.checkpoint_every=" + every + " --out " + dir.file(out) + extra);
  };
  const auto eval_records = [&](const std::string& out, int64_t epoch) {
    int n = 0;
    for (const auto& j : moejet::testing::read_jsonl(dir.file(out + "/metrics.jsonl"))) {
      n += j.value("event", "") == "eval" && j.value("epoch", int64_t{-2}) == epoch;
    }
    return n;
  };

  // Every 2 epochs: nothing is written after epoch 1 (step 2), so a fault there never fires.
  r = with("state-written:2", "2", "every2");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(read_file_bytes(dir.file("every2/last.safetensors")), reference);
  EXPECT_TRUE(file_exists(dir.file("every2/best.safetensors")));

  // Killed after step 5: resumes from epoch 2's checkpoint (step 4).
  r = with("step:5", "2", "killed");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(file_exists(dir.file("killed/last.state-4.pt")));
  r = with("", "2", "killed", " --resume");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "after step 4: epoch 3/3, batch 0")) << r.output;
  EXPECT_EQ(read_file_bytes(dir.file("killed/last.safetensors")), reference);
  EXPECT_EQ(eval_records("killed", 2), 1) << "epoch 3's evaluation is logged once";

  // Ctrl-C after step 3 writes the checkpoint of that step, due or not.
  r = with("interrupt:3", "2", "ctrl-c");
  EXPECT_EQ(r.code, 130) << r.output;
  EXPECT_TRUE(file_exists(dir.file("ctrl-c/last.state-3.pt")));

  // 0: only at the end. Killed before that, --resume starts again, with a fresh log.
  r = with("step:5", "0", "end-only");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_FALSE(file_exists(dir.file("end-only/last.safetensors")));
  r = with("", "0", "end-only", " --resume");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "nothing to resume")) << r.output;
  EXPECT_EQ(read_file_bytes(dir.file("end-only/last.safetensors")), reference);
  EXPECT_EQ(eval_records("end-only", -1), 1) << "the start evaluation is logged once";

  r = with("", "-1", "bad");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "train.checkpoint_every")) << r.output;
}

TEST(Cli, EvalPreprocessesAndPicksDataAsTheModelWasTrained) {
  // Trained with its own mean and std: eval without flags scores what training's own eval scored,
  // on the same (full) test set, which it takes from the checkpoint.
  moejet::testing::TempDir dir;
  const std::string out = dir.file("run");
  auto r = run("train -q --config " + std::string(MOEJET_SOURCE_DIR) + "/configs/vit_fmnist.json --out " + out +
               " --epochs 1 --set data.train_limit=256 --set data.eval_limit=0 --set model.depth=1"
               " --set model.embed_dim=16 --set model.num_heads=2 --batch-size 64"
               " --set augment.mean=[0.2] --set augment.std=[0.3]");
  ASSERT_EQ(r.code, 0) << r.output;
  const double trained = read_json_file(out + "/eval.json")["top1"].get<double>();
  r = run("eval " + out + "/best.safetensors -q --out " + dir.file("ev"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "stored in the checkpoint")) << r.output;
  EXPECT_TRUE(contains(r.output, "mean [0.2], std [0.3]")) << r.output;
  EXPECT_TRUE(contains(r.output, "the checkpoint's training data")) << r.output;
  auto ev = read_json_file(dir.file("ev/eval.json"));
  EXPECT_EQ(ev["count"], 10000);
  EXPECT_DOUBLE_EQ(ev["top1"].get<double>(), trained);
  EXPECT_EQ(ev["preprocessing"]["label_names"][9], "Ankle boot");
  // A flag overrides the stored value, and the log says so.
  r = run("eval " + out + "/best.safetensors -q --limit 100 --mean 0.5");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "with flags): input 1x28x28, mean [0.5], std [0.3]")) << r.output;
  // The data set's classes must be the model's.
  r = run("eval " + out + "/best.safetensors -q --classes 1 0 2 3 4 5 6 7 8 9 --limit 100");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "evaluate on the data it was trained on")) << r.output;
  // A file that says nothing about its data: no silent Fashion-MNIST.
  io::write_safetensors(dir.file("bare.safetensors"), io::read_safetensors(out + "/best.safetensors"));
  r = run("eval " + dir.file("bare.safetensors") + " -q --model " + out + "/config.json");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "pass --data")) << r.output;
}

TEST(Cli, PredictNamesTheClassesOfImageFilesAsEvalScoresThem) {
  // A small ViT trained on the CIFAR-10 JPEGs in tests/data (3 classes, 23 images): predict's
  // top-1 over the class folders agrees with eval's top-1 on the same folder, image by image in
  // sum, so both preprocess alike and name the classes the model was trained with.
  moejet::testing::TempDir dir;
  const std::string imgs = moejet::testing::test_data_dir() + "/cifar10_jpg/test";
  const std::string out = dir.file("run");
  auto r = run("train -q --config " + std::string(MOEJET_SOURCE_DIR) + "/configs/vit_fmnist.json --out " + out +
               " --epochs 3 --batch-size 8 --set data.dataset=folder:" + moejet::testing::test_data_dir() +
               "/cifar10_jpg --set data.train_split=test --set data.train_limit=0 --set data.eval_limit=0 --set "
               "model.img_size=32 --set model.in_chans=3"
               " --set model.patch_size=8 --set model.num_classes=3 --set model.depth=1 --set model.embed_dim=16"
               " --set model.num_heads=2 --set augment.mean=[0.5,0.5,0.5] --set augment.std=[0.25,0.25,0.25]"
               " --set augment.hflip=0");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run("eval -q " + out + "/best.safetensors --out " + dir.file("ev"));
  ASSERT_EQ(r.code, 0) << r.output;
  const double top1 = read_json_file(dir.file("ev/eval.json"))["top1"].get<double>();
  r = run("predict -q " + out + "/best.safetensors " + imgs + " --format csv -k 2 -o " + dir.file("p.csv"));
  ASSERT_EQ(r.code, 0) << r.output;
  // predict's CSV: its header, then each row's comma-separated fields.
  const auto read_csv = [](const std::string& path) {
    std::ifstream in(path);
    std::string header, line;
    std::getline(in, header);
    std::vector<std::vector<std::string>> rows;
    while (std::getline(in, line)) {
      std::stringstream ss(line);
      rows.emplace_back();
      for (std::string x; std::getline(ss, x, ',');) {
        rows.back().push_back(x);
      }
    }
    return std::make_pair(header, rows);
  };
  const auto folder_of = [](const std::string& file) {
    return std::filesystem::path(file).parent_path().filename().string();
  };
  const auto [header, rows] = read_csv(dir.file("p.csv"));
  EXPECT_EQ(header, "file,class_1,name_1,prob_1,class_2,name_2,prob_2");
  int hits = 0;
  for (const auto& f : rows) {
    ASSERT_EQ(f.size(), 7u) << ::testing::PrintToString(f);
    hits += f[2] == folder_of(f[0]);
    EXPECT_GE(std::stod(f[3]), std::stod(f[6])) << f[0];
  }
  EXPECT_EQ(rows.size(), 23u);
  EXPECT_NEAR(100.0 * hits / static_cast<double>(rows.size()), top1, 1e-6);
  // In bf16, predict's top-1 is what eval --precision bf16 scores; a precision it cannot run is
  // an error naming the flag.
  if (moejet::kernels::bf16_native(torch::kCPU)) {
    r = run("eval -q " + out + "/best.safetensors --precision bf16 --out " + dir.file("ev16"));
    ASSERT_EQ(r.code, 0) << r.output;
    const double top1_bf16 = read_json_file(dir.file("ev16/eval.json"))["top1"].get<double>();
    r = run("predict -q " + out + "/best.safetensors " + imgs + " --format csv -k 1 --precision bf16 -o " +
            dir.file("p16.csv"));
    ASSERT_EQ(r.code, 0) << r.output;
    const auto rows16 = read_csv(dir.file("p16.csv")).second;
    int hits16 = 0;
    for (const auto& f : rows16) {
      ASSERT_GE(f.size(), 3u) << ::testing::PrintToString(f);
      hits16 += f[2] == folder_of(f[0]);
    }
    EXPECT_EQ(rows16.size(), 23u);
    EXPECT_NEAR(100.0 * hits16 / static_cast<double>(rows16.size()), top1_bf16, 1e-6);
  }
  r = run("predict -q " + out + "/best.safetensors " + imgs + " --precision fp16");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--precision")) << r.output;
  // A list file and a single image, as a table on stdout; a missing file is named.
  { std::ofstream(dir.file("list.txt")) << imgs << "/dog/0003.jpg\n"; }
  r = run("predict -q " + out + "/best.safetensors " + dir.file("list.txt") + " " + imgs + "/cat/0000.jpg -k 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "dog/0003.jpg")) << r.output;
  EXPECT_TRUE(contains(r.output, "cat/0000.jpg")) << r.output;
  EXPECT_TRUE(contains(r.output, "top-1")) << r.output;
  r = run("predict -q " + out + "/best.safetensors " + dir.file("none.jpg"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "none.jpg: no such file or folder")) << r.output;
  // Export: TorchScript with its preprocessing beside it, and timm's safetensors of the dense model.
  r = run("export " + out + "/best.safetensors -o " + dir.file("ts/model.pt") + " --batch 4");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "its logits match moejet's")) << r.output;
  const auto side = read_json_file(dir.file("ts/model.json"));
  EXPECT_EQ(side["batch_size"], 4);
  EXPECT_EQ(side["label_names"], (json{"airplane", "cat", "dog"}));
  EXPECT_EQ(side["input_size"], (json{3, 32, 32}));
  EXPECT_EQ(side["std"], (json{0.25, 0.25, 0.25}));
  r = run("export " + out + "/best.safetensors --format timm -o " + dir.file("timm.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto timm = io::read_safetensors(dir.file("timm.safetensors"));
  EXPECT_TRUE(timm.contains("blocks.0.mlp.fc1.weight"));
  EXPECT_TRUE(timm.contains("head.weight"));
}

TEST(Cli, MessagesSayWhatWasMeantAndOutputStaysClean) {
  moejet::testing::TempDir dir;
  auto r = run("trian --config x.json");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "unknown command 'trian'; did you mean 'train'?")) << r.output;
  r = run("serve --help");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "unknown command 'serve'")) << r.output;
  r = run("train --config configs/vit_fmnist.json --epoch 1");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "did you mean --epochs?")) << r.output;
  for (const auto& flag : {"--lr nan", "--batch-size -5", "--epochs 0"}) {
    r = run(std::string("train -q --config configs/vit_fmnist.json --out ") + dir.file("x") + " " + flag);
    EXPECT_EQ(r.code, 1) << flag << ": " << r.output;
  }
  EXPECT_FALSE(file_exists(dir.file("x/last.safetensors")));
  r = run("info --model myconf.json");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "myconf.json: no such file")) << r.output;
  r = run("info --model vit_tiny");
  EXPECT_TRUE(contains(r.output, "convnext_atto")) << r.output;
  // Examples name configs/...: found from any folder. Logs go to stderr: stdout is the JSON.
  r = run_shell("cd " + dir.path.string() + " && " + std::string(MOEJET_BINARY) +
                " info --json --model configs/paper/vit_tiny.json --log-level warn > " + dir.file("info.json"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NEAR(read_json_file(dir.file("info.json"))["params"].get<double>() / 1e6, 5.72, 0.01);
  // A dense checkpoint given to an MoE: one error that says to recycle it first.
  const std::string small =
      " --set model.embed_dim=32 --set model.num_heads=2 --set data.train_limit=64"
      " --set data.eval_limit=32 --batch-size 32";
  r = run("train -q --config configs/vit_fmnist.json --out " + dir.file("dense") + " --max-steps 1" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "the warm-up (")) << "a run shorter than its warm-up needs a warning\n" << r.output;
  // The bar counts what --max-steps lets the epoch run (1 of its 2 batches), epochs 1-based as the log.
  r = run("train --config configs/vit_fmnist.json --out " + dir.file("bar") + " --max-steps 1" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "epoch 1/10 1/1 ")) << r.output;
  EXPECT_TRUE(contains(r.output, "epoch 1/10 eval")) << r.output;
  r = run("train -q --config configs/vit_fmnist_sphero.json --out " + dir.file("moe") + " --max-steps 1 --init " +
          dir.file("dense/last.safetensors") + small);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "moejet recycle --dense")) << r.output;
}

TEST(Cli, TrainThenEvalWritesCheckpointMetricsAndConfusionMatrix) {
  moejet::testing::TempDir dir;
  const std::string out = dir.file("run");
  auto r = run("train -q --config " + std::string(MOEJET_SOURCE_DIR) + "/configs/vit_fmnist.json" + " --out " + out +
               " --epochs 1 --set data.train_limit=256 --set data.eval_limit=200 --set model.depth=1"
               " --set model.embed_dim=32 --set model.num_heads=2 --batch-size 64");
  ASSERT_EQ(r.code, 0) << r.output;
  for (auto f :
       {"last.safetensors", "best.safetensors", "last.state-4.pt", "metrics.jsonl", "config.json", "eval.json"}) {
    EXPECT_TRUE(file_exists(out + "/" + f)) << f;
  }
  auto resolved = read_json_file(out + "/config.json");
  EXPECT_EQ(resolved["model"]["embed_dim"], 32);
  EXPECT_EQ(resolved["train"]["epochs"], 1);

  r = run("eval " + out + "/best.safetensors --limit 200 -q --out " + out + "/eval_cli");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "top1")) << r.output;
  EXPECT_TRUE(contains(r.output, "Ankle boot")) << r.output;  // per-class lines carry class names
  auto ev = read_json_file(out + "/eval_cli/eval.json");
  EXPECT_EQ(ev["count"], 200);
  EXPECT_EQ(ev["confusion"].size(), 10u);
  int64_t total = 0;
  for (auto& row : ev["confusion"]) {
    for (auto& v : row) {
      total += v.get<int64_t>();
    }
  }
  EXPECT_EQ(total, 200);
  std::ifstream csv(out + "/eval_cli/confusion.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_TRUE(contains(header, "\"T-shirt/top\"")) << header;
}

// The score a run logs is the score `moejet eval` gives its checkpoint: the same eval_limit images
// whatever train.seed (seed 1 used to score a subset drawn with seed 2, and `eval --limit` one
// drawn with 0), in the precision the run evaluated in.
TEST(Cli, EvalOfARunsCheckpointReproducesTheScoreTheRunLogged) {
  moejet::testing::TempDir dir;
  std::vector<std::string> precisions{"fp32"};
  if (moejet::kernels::bf16_native(torch::kCPU)) {
    precisions.push_back("bf16");
  }
  for (const auto& precision : precisions) {
    const std::string out = dir.file("run-" + precision);
    auto r = run("train -q --config " + std::string(MOEJET_SOURCE_DIR) + "/configs/vit_fmnist.json" + " --out " + out +
                 " --epochs 1 --set data.train_limit=256 --set data.eval_limit=300 --set model.depth=1"
                 " --set model.embed_dim=32 --set model.num_heads=2 --batch-size 64 --set train.seed=1"
                 " --set train.precision=" +
                 precision);
    ASSERT_EQ(r.code, 0) << r.output;
    const auto logged = read_json_file(out + "/eval.json");
    r = run("eval " + out + "/last.safetensors --limit 300 -q --precision " + precision + " --out " + out + "/cli");
    ASSERT_EQ(r.code, 0) << r.output;
    const auto again = read_json_file(out + "/cli/eval.json");
    EXPECT_EQ(again["precision"], precision);
    EXPECT_EQ(again["count"], 300);
    EXPECT_EQ(again["confusion"], logged["confusion"]) << precision;
    EXPECT_DOUBLE_EQ(again["top1"].get<double>(), logged["top1"].get<double>()) << precision;
    EXPECT_NEAR(again["loss"].get<double>(), logged["loss"].get<double>(), 1e-5) << precision;
  }
  auto r = run("eval " + dir.file("run-fp32") + "/last.safetensors --limit 300 -q --precision fp16");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--precision: expected")) << r.output;
}

TEST(Cli, TrainsViTsWithSpheroMoeSoftMoeAndTopKBlocksAndLogsRouting) {
  moejet::testing::TempDir dir;
  for (std::string name : {"vit_fmnist_sphero", "vit_fmnist_softmoe", "vit_fmnist_topk"}) {
    const std::string out = dir.file(name);
    auto r =
        run("train -q --config " + std::string(MOEJET_SOURCE_DIR) + "/configs/" + name + ".json" + " --out " + out +
            " --epochs 1 --set data.train_limit=256 --set data.eval_limit=100 --set model.embed_dim=32"
            " --set model.num_heads=2 --set train.log_every=1 --batch-size 64");
    ASSERT_EQ(r.code, 0) << name << "\n" << r.output;
    bool saw_routing = false;
    for (const auto& j : moejet::testing::read_jsonl(out + "/metrics.jsonl")) {
      if (j["event"] == "train") {
        ASSERT_TRUE(j.contains("moe")) << j;
        ASSERT_EQ(j["moe"].size(), 3u) << j;
        EXPECT_GE(j["moe"][0]["load_max_over_mean"].get<double>(), 1.0) << j;
        saw_routing = true;
      }
    }
    EXPECT_TRUE(saw_routing) << name;
    // The saved config carries the MoE layout, so eval rebuilds the MoE model from the file.
    r = run("eval " + out + "/last.safetensors --limit 100 -q");
    ASSERT_EQ(r.code, 0) << r.output;
  }
}

TEST(Cli, BenchPrintsRatiosWritesJsonAndAChromeTrace) {
  moejet::testing::TempDir dir;
  const std::string src = MOEJET_SOURCE_DIR;
  // Both precisions where this CPU multiplies bf16 natively; elsewhere bf16 is refused.
  const bool bf16 = moejet::kernels::bf16_native(torch::kCPU);
  const std::vector<std::string> precisions =
      bf16 ? std::vector<std::string>{"fp32", "bf16"} : std::vector<std::string>{"fp32"};
  auto r = run("bench --models " + src + "/configs/vit_fmnist.json " + src +
               "/configs/vit_fmnist_sphero.json --batch 4,2 --steps 2 --warmup 0 --precision " +
               (bf16 ? "fp32,bf16" : "fp32") + " --out " + dir.file("bench.json") + " --trace " + dir.file("trace") +
               " --floor");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "ratio")) << r.output;
  auto result = read_json_file(dir.file("bench.json"));
  ASSERT_EQ(result["runs"].size(), 2u);  // one per batch size, in the order given
  EXPECT_EQ(result["runs"][1]["batch"].get<int64_t>(), 2);
  for (const auto& run_at_batch : result["runs"]) {
    const auto& models = run_at_batch["models"];
    ASSERT_EQ(models.size(), 2u * precisions.size());  // every model in every precision
    for (size_t p = 0; p < precisions.size(); ++p) {
      const auto& dense = models[2 * p];
      const auto& moe = models[2 * p + 1];
      EXPECT_EQ(dense["precision"], precisions[p]);
      EXPECT_EQ(moe["precision"], precisions[p]);
      EXPECT_DOUBLE_EQ(dense["ratio_to_first"].get<double>(), 1.0);  // within its precision
      EXPECT_GT(moe["params"].get<int64_t>(), dense["params"].get<int64_t>());
      EXPECT_GT(moe["forward_seconds_median"].get<double>(), 0.0);
      // The profiled step is kept out of the timing.
      EXPECT_EQ(moe["step_seconds"].size(), 2u);
      // How close to the machine's limit: the achieved rate against the same precision's GEMM
      // peak of the same run.
      const double rate = moe["train_gflops_per_s"].get<double>();
      EXPECT_NEAR(rate,
                  6 * moe["flops"].get<double>() * run_at_batch["batch"].get<double>() /
                      moe["step_seconds_median"].get<double>() / 1e9,
                  1e-9 * rate);
      EXPECT_NEAR(moe["fraction_of_gemm_peak"].get<double>(),
                  rate / result["gemm_peak_gflops"][precisions[p]].get<double>(), 1e-12);
      // The optimizer against the memory's rate of the same run: 28 bytes per trained parameter.
      EXPECT_EQ(moe["optimizer_bytes"].get<int64_t>(), 28 * moe["params"].get<int64_t>());
      EXPECT_NEAR(moe["optimizer_floor_seconds"].get<double>(),
                  moe["optimizer_bytes"].get<double>() / (result["memory_gbps"].get<double>() * 1e9), 1e-15);
      EXPECT_NEAR(moe["optimizer_fraction_of_memory_rate"].get<double>(),
                  moe["optimizer_floor_seconds"].get<double>() / moe["optimizer_seconds_median"].get<double>(), 1e-12);
      EXPECT_NEAR(moe["speedup_over_fp32"].get<double>(),
                  models[1]["step_seconds_median"].get<double>() / moe["step_seconds_median"].get<double>(), 1e-12);
    }
  }
  for (const auto& p : precisions) {
    EXPECT_GT(result["gemm_peak_gflops"][p].get<double>(), 1.0);
    EXPECT_TRUE(contains(r.output, "GEMM peak " + p + ": ")) << r.output;
  }
  EXPECT_GT(result["memory_gbps"].get<double>(), 0.0);
  EXPECT_TRUE(contains(r.output, "memory: ")) << r.output;
  // --floor: each model's products of one step at the last batch size, timed alone, in each precision.
  EXPECT_TRUE(contains(r.output, "products at batch 2")) << r.output;
  const auto& alone = result["products_alone"];
  ASSERT_EQ(alone.size(), 2u * precisions.size());
  for (const auto& row : alone) {
    EXPECT_EQ(row["batch"].get<int64_t>(), 2);
    EXPECT_GT(row["product_calls"].get<int64_t>(), 0) << row;
    EXPECT_GE(row["product_calls"].get<int64_t>(), row["distinct_products"].get<int64_t>()) << row;
    EXPECT_GT(row["products_seconds"].get<double>(), 0.0) << row;
    EXPECT_GT(row["products_flops"].get<double>(), 0.0) << row;
    // The step's floor: its products alone and its optimizer at the memory's rate.
    EXPECT_GT(row["optimizer_floor_seconds"].get<double>(), 0.0) << row;
    EXPECT_NEAR(row["floor_seconds"].get<double>(),
                row["products_seconds"].get<double>() + row["optimizer_floor_seconds"].get<double>(), 1e-12);
    // The recorded step splits into its products as they ran and the other work.
    EXPECT_GT(row["products_in_step_seconds"].get<double>(), 0.0) << row;
    EXPECT_NEAR(row["other_seconds"].get<double>() + row["products_in_step_seconds"].get<double>(),
                row["recorded_step_seconds"].get<double>(), 1e-12);
    EXPECT_GT(row["other_seconds"].get<double>(), 0.0) << row;
    // Each distinct product with its calls: all the calls, all the time alone.
    int64_t calls = 0;
    double alone = 0;
    for (const auto& g : row["products"]) {
      calls += g["calls"].get<int64_t>();
      alone += g["seconds"].get<double>();
    }
    EXPECT_EQ(row["products"].size(), row["distinct_products"].get<size_t>()) << row;
    EXPECT_EQ(calls, row["product_calls"].get<int64_t>()) << row;
    EXPECT_NEAR(alone, row["products_seconds"].get<double>(), 1e-12) << row;
  }
  // The same step's medians as the timing table's last batch.
  EXPECT_DOUBLE_EQ(alone[1]["step_seconds_median"].get<double>(),
                   result["runs"][1]["models"][1]["step_seconds_median"].get<double>());
  // The MoE has more products than the dense model (its experts and routing).
  EXPECT_GT(alone[1]["product_calls"].get<int64_t>(), alone[0]["product_calls"].get<int64_t>());
  // The trace names the experts' batched GEMMs.
  auto trace = read_file_bytes(dir.file("trace/1.trace.json"));
  auto events = json::parse(std::string(trace.begin(), trace.end()));
  EXPECT_TRUE(contains(events.dump(), "moejet::expert_bmm"));
  EXPECT_NE(run("bench --batch 0 --steps 1").code, 0);
  r = run("bench --precision fp16 --steps 1");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.output, "bench --precision: expected \"fp32\" or \"bf16\", got \"fp16\"")) << r.output;
  if (!bf16) {
    r = run("bench --precision bf16 --steps 1");
    EXPECT_NE(r.code, 0);
    EXPECT_TRUE(contains(r.output, "no bf16 instructions")) << r.output;
  }
}

TEST(Cli, RecycleADenseCheckpointThenFineTuneTheMoe) {
  moejet::testing::TempDir dir;
  const std::string src = MOEJET_SOURCE_DIR;
  const std::string small = " --set model.embed_dim=32 --set model.num_heads=2";
  auto r = run("train -q --config " + src + "/configs/vit_fmnist.json --out " + dir.file("dense") +
               " --epochs 1 --set data.train_limit=256 --set data.eval_limit=100 --batch-size 64" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string moe_small = " --set embed_dim=32 --set num_heads=2";
  for (std::string method : {"copy", "random", "uniform", "graph", "importance"}) {
    r = run("recycle -q --dense " + dir.file("dense/best.safetensors") + " --model " + src +
            "/configs/vit_fmnist_sphero.json" + moe_small + " --method " + method +
            " --images 64 --batch-size 32 --out " + dir.file(method + ".safetensors"));
    ASSERT_EQ(r.code, 0) << method << "\n" << r.output;
    auto report = read_json_file(dir.file(method + ".recycle.json"));
    EXPECT_EQ(report["method"], method);
    ASSERT_EQ(report["blocks"].size(), 3u);  // MoE blocks 3, 4, 5
    auto core = report["blocks"][0]["groups"][0];
    EXPECT_EQ(core["name"], "core");
    EXPECT_EQ(core["units"].size(), 8u);
    EXPECT_EQ(core.contains("unit_importance"), method == "graph" || method == "importance");
    if (method == "graph") {  // the authors' variant and firing test by default
      EXPECT_EQ(report["graph"], "jetpack");
      EXPECT_EQ(core["firing_threshold"].get<double>(), 0.0);
      EXPECT_EQ(report["statistics"]["sample"], "stratified");
    }
  }
  // moejet's own variants, and the authors' "first N images" sample with a teacher's transform.
  r = run("recycle -q --dense " + dir.file("dense/best.safetensors") + " --model " + src +
          "/configs/vit_fmnist_sphero.json" + moe_small +
          " --method graph --graph balanced --firing-quantile 0.8 --stats-sample first --images 40"
          " --stats-set augment.mean=[0.25] --stats-set augment.std=[0.5] --batch-size 32 --out " +
          dir.file("own.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "its first 40 images")) << r.output;
  {
    auto report = read_json_file(dir.file("own.recycle.json"));
    EXPECT_EQ(report["graph"], "balanced");
    EXPECT_EQ(report["statistics"]["images"], 40);
    EXPECT_EQ(report["statistics"]["sample"], "first");
    EXPECT_EQ(report["statistics"]["transform"]["mean"], json::parse("[0.25]"));
    EXPECT_GT(report["blocks"][0]["groups"][0]["firing_threshold"].get<double>(), 0.0);
  }
  // The recycled init evaluates with no flags: the dense model's preprocessing, class names and
  // data travel with it (the step-0 point of a fine-tuning curve).
  r = run("eval -q " + dir.file("copy.safetensors") + " --limit 50");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "fashion-mnist (the checkpoint's training data)")) << r.output;
  // The recycled file carries the MoE config: info and train --init take it as it is.
  r = run("info --checkpoint " + dir.file("importance.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "sphero")) << r.output;
  r = run("train -q --config " + src + "/configs/vit_fmnist_sphero.json --init " + dir.file("importance.safetensors") +
          " --out " + dir.file("ft") +
          " --epochs 1 --max-steps 2 --set data.train_limit=128 --set data.eval_limit=64 --batch-size 64" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "loaded")) << r.output;

  // Experts wider than the dense MLP: one error naming the tensor and sizes; nothing written.
  r = run("recycle -q --dense " + dir.file("dense/best.safetensors") + " --model " + src +
          "/configs/vit_fmnist_sphero.json" + moe_small + " --set moe.core_mlp_ratio=8 --method random --out " +
          dir.file("wide.safetensors"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "blocks.3.mlp.fc1.weight [128, 32] has only 128")) << r.output;
  EXPECT_FALSE(file_exists(dir.file("wide.safetensors")));

  // A dense checkpoint without the MLP weights.
  auto state = io::read_checkpoint(dir.file("dense/best.safetensors"));
  io::StateDict cut;
  for (const auto& item : state) {
    if (item.key().rfind("blocks.4.mlp.fc1.", 0) != 0)
      cut.insert(item.key(), item.value());
  }
  io::write_safetensors(dir.file("cut.safetensors"), cut);
  r = run("recycle -q --dense " + dir.file("cut.safetensors") + " --model " + src + "/configs/vit_fmnist_sphero.json" +
          moe_small + " --method copy --out " + dir.file("x.safetensors"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "blocks.4.mlp.fc1.weight")) << r.output;
}

TEST(Cli, TheAuthorsMmengineCheckpointLoadsEverywhereAndConvertsBack) {
  // vit_moe_avg: weights written by the MoE Jetpack authors' VisionTransformerMoe, saved as their
  // mmengine training does ("model." prefix, their MoE key names, a pickled MessageHub object).
  moejet::testing::TempDir dir;
  const std::string pth = moejet::testing::fixture_path("jetpack/vit_moe_avg/mmengine_epoch_300.pth");
  const std::string cfg = moejet::testing::test_data_dir() + "/jetpack_vit_moe_avg.json";
  auto layouts_reported = [](const std::string& out) {
    return contains(out, "mmengine checkpoint layout") && contains(out, "MoE Jetpack authors' key layout: 20 keys");
  };
  auto r = run("info --checkpoint " + pth + " --model " + cfg);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(layouts_reported(r.output)) << r.output;
  EXPECT_TRUE(contains(r.output, "sphero")) << r.output;
  r = run("eval " + pth + " --model " + cfg + " --data fashion-mnist --limit 64 -q");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(layouts_reported(r.output)) << r.output;
  EXPECT_TRUE(contains(r.output, "top1")) << r.output;
  auto tc = read_json_file(std::string(MOEJET_SOURCE_DIR) + "/configs/vit_fmnist.json");
  tc["model"] = read_json_file(cfg);
  write_json_file(dir.file("train.json"), tc);
  r = run("train -q --config " + dir.file("train.json") + " --init " + pth + " --out " + dir.file("ft") +
          " --epochs 1 --max-steps 1 --set data.train_limit=64 --set data.eval_limit=64 --batch-size 32");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(layouts_reported(r.output)) << r.output;

  // Into a moejet checkpoint (config stored), then back to the authors' layout as torch.save and
  // as safetensors: the very tensors of their model file, under their keys.
  r = run("convert " + pth + " --model " + cfg + " --to moejet -o " + dir.file("m.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run("info --checkpoint " + dir.file("m.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "key layout")) << r.output;
  auto theirs = io::read_safetensors(moejet::testing::fixture_path("jetpack/vit_moe_avg/model.safetensors"));
  for (const char* out : {"j.pth", "j.safetensors"}) {
    r = run("convert " + dir.file("m.safetensors") + " --to jetpack -o " + dir.file(out));
    ASSERT_EQ(r.code, 0) << r.output;
    auto back = io::read_checkpoint(dir.file(out));
    auto keys = back.keys(), want = theirs.keys();
    EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()), std::set<std::string>(want.begin(), want.end())) << out;
    for (const auto& item : theirs) {
      ASSERT_TRUE(back.contains(item.key())) << out << ": " << item.key();
      EXPECT_TRUE(back[item.key()].equal(item.value())) << out << ": " << item.key();
    }
  }
  // A dense timm file without a model config: written as torch.save, tensor for tensor, with a
  // warning that nothing was checked against a model.
  const std::string timm_file = moejet::testing::fixture_path("timm/vit_small_custom/vit_small_custom.safetensors");
  r = run("convert " + timm_file + " --to timm -o " + dir.file("timm.pth"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "not checked against a model")) << r.output;
  auto timm_state = io::read_safetensors(timm_file);
  auto timm_back = io::read_checkpoint(dir.file("timm.pth"));
  ASSERT_EQ(timm_back.keys(), timm_state.keys());
  for (const auto& item : timm_state) {
    EXPECT_TRUE(timm_back[item.key()].equal(item.value())) << item.key();
  }
  // An MoE has no plain timm layout; a bad output name writes nothing.
  r = run("convert " + dir.file("m.safetensors") + " --to timm -o " + dir.file("t.safetensors"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "use --to jetpack")) << r.output;
  EXPECT_FALSE(file_exists(dir.file("t.safetensors")));
  r = run("convert " + dir.file("m.safetensors") + " -o " + dir.file("t.bin"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, ".safetensors, .pth or .pt")) << r.output;
}

TEST(Cli, ConvNextDenseThenRecycledSpheroMoeOnFashionMnist) {
  moejet::testing::TempDir dir;
  const std::string src = MOEJET_SOURCE_DIR;
  // A narrower atto so that the test stays quick; the shipped configs are the real ones.
  const std::string small = " --set model.dims=[8,16,32,48]";
  auto r = run("train -q --config " + src + "/configs/convnext_fmnist.json --out " + dir.file("dense") +
               " --epochs 1 --set data.train_limit=128 --set data.eval_limit=64 --batch-size 32" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "final top1")) << r.output;
  r = run("recycle -q --dense " + dir.file("dense/best.safetensors") + " --model " + src +
          "/configs/convnext_fmnist_sphero.json --set dims=[8,16,32,48] --method importance --images 32 "
          "--batch-size 16 --out " +
          dir.file("init.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  auto report = read_json_file(dir.file("init.recycle.json"));
  ASSERT_EQ(report["blocks"].size(), 3u);
  EXPECT_EQ(report["blocks"][0]["key"], "stages.2.blocks.3.mlp");
  EXPECT_EQ(report["blocks"][0]["groups"][0]["dense_hidden"], 128);
  EXPECT_EQ(report["blocks"][0]["groups"][1]["hidden"], 32);  // universal: ratio 1 of width 32
  r = run("info --checkpoint " + dir.file("init.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "ConvNeXt") && contains(r.output, "stages.2.blocks.3.mlp")) << r.output;
  r = run("train -q --config " + src + "/configs/convnext_fmnist_sphero.json --init " + dir.file("init.safetensors") +
          " --out " + dir.file("ft") +
          " --epochs 1 --max-steps 2 --set data.train_limit=64 --set data.eval_limit=32 "
          "--batch-size 32" +
          small);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "loaded")) << r.output;
  r = run("eval -q " + dir.file("ft/last.safetensors") + " --limit 32");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "top1")) << r.output;
}

TEST(Cli, VJetMoeTinyFromViTSmallCoreAndViTTinyDenseCheckpoints) {
  // The authors' released init: dense parts and universal experts from a ViT-T, core experts
  // from a ViT-S (384 channels, hidden 1536) with 192 channels and 768 units selected per expert.
  // Both checkpoints are timm-layout files without moejet metadata, as timm writes them.
  moejet::testing::TempDir dir;
  const std::string src = MOEJET_SOURCE_DIR;
  {
    torch::NoGradGuard ng;
    models::VisionTransformer small(models::vit_preset("vit_small_patch16_224"));
    io::write_safetensors(dir.file("vit_s.safetensors"), io::module_state_dict(*small));
    // timm's ViT-T (class token, final norm) for V-JetMoE-T's avg pool + fc_norm head.
    models::VisionTransformer tiny(models::vit_preset("vit_tiny_patch16_224"));
    io::write_safetensors(dir.file("vit_t.safetensors"), io::module_state_dict(*tiny));
  }
  auto r =
      run("recycle -q --dense " + dir.file("vit_t.safetensors") + " --source core=" + dir.file("vit_s.safetensors") +
          " --source-model core=vit_small_patch16_224 --model " + src +
          "/configs/paper/vjetmoe_tiny_in1k.json --method uniform --out " + dir.file("vjetmoe_t.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "norm: dropped")) << r.output;
  auto report = read_json_file(dir.file("vjetmoe_t.recycle.json"));
  EXPECT_EQ(report["sources"]["core"]["width"], 384);
  EXPECT_FALSE(report["sources"]["dense"].contains("channels"));
  ASSERT_EQ(report["blocks"].size(), 6u);  // blocks 7-12
  auto core = report["blocks"][0]["groups"][0];
  // As the authors' generator: every core expert its own 192 of the ViT-S's 384 channels.
  EXPECT_TRUE(report["sources"]["core"]["channels"].is_string());
  ASSERT_EQ(core["channels"].size(), 98u);
  EXPECT_EQ(core["channels"][0].size(), 192u);
  EXPECT_EQ(core["channels"][0].back().get<int64_t>() < 384, true);
  EXPECT_EQ(core["source"], dir.file("vit_s.safetensors"));
  EXPECT_EQ(core["experts"], 98);
  EXPECT_EQ(core["dense_hidden"], 1536);
  EXPECT_EQ(core["units"][0].size(), 768u);
  EXPECT_EQ(report["blocks"][0]["groups"][1]["experts"], 196);
  EXPECT_EQ(report["blocks"][0]["groups"][1]["source"], dir.file("vit_t.safetensors"));
  r = run("info --checkpoint " + dir.file("vjetmoe_t.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "Param (M)  265.41")) << r.output;

  // A ViT-S cannot give a ViT-S-wide model's experts from a ViT-T: one error, nothing written.
  r = run("recycle -q --dense " + dir.file("vit_t.safetensors") + " --source core=" + dir.file("vit_t.safetensors") +
          " --source-model core=vit_tiny_patch16_224 --model " + src +
          "/configs/paper/vjetmoe_tiny_in1k.json --set embed_dim=384 --set num_heads=6 --method uniform --out " +
          dir.file("bad.safetensors"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, dir.file("vit_t.safetensors")) && contains(r.output, "[192, 3, 16, 16]") &&
              contains(r.output, "[384, 3, 16, 16]"))
      << r.output;
  EXPECT_FALSE(file_exists(dir.file("bad.safetensors")));
}

TEST(Cli, MobileVMoeSuperClassesFromConfusionThenRouterSupervisedTraining) {
  moejet::testing::TempDir dir;
  const std::string src = MOEJET_SOURCE_DIR;
  const std::string small =
      " --set model.embed_dim=32 --set model.num_heads=2 --batch-size 64"
      " --set data.train_limit=256 --set data.eval_limit=100";
  auto r =
      run("train -q --config " + src + "/configs/vit_fmnist.json --out " + dir.file("dense") + " --epochs 1" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run("eval -q " + dir.file("dense/best.safetensors") + " --split train --limit 300 --out " + dir.file("ev"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run("superclasses --confusion " + dir.file("ev/confusion.csv") + " --experts 5 --out " + dir.file("sc.json"));
  ASSERT_EQ(r.code, 0) << r.output;
  auto sc = read_json_file(dir.file("sc.json"));
  EXPECT_EQ(sc["superclass_of"].size(), 10u);
  EXPECT_EQ(sc["groups"].size(), 5u);
  EXPECT_TRUE(contains(sc.dump(), "Ankle boot")) << "class names come from the confusion file";

  r = run("train -q --config " + src + "/configs/vit_fmnist_mobile_vmoe.json --out " + dir.file("mv") +
          " --epochs 1 --set train.superclasses=" + dir.file("sc.json") + " --set train.log_every=1" + small);
  ASSERT_EQ(r.code, 0) << r.output;
  bool saw_router = false;
  for (const auto& j : moejet::testing::read_jsonl(dir.file("mv/metrics.jsonl"))) {
    if (j["event"] == "eval") {
      ASSERT_TRUE(j.contains("router_top1")) << j;
      saw_router = true;
    }
  }
  EXPECT_TRUE(saw_router);
  // eval finds the super-classes in the checkpoint and reports the router's accuracy.
  r = run("eval " + dir.file("mv/last.safetensors") + " --limit 100 -q");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "router (5-way super-classes): top1")) << r.output;
  // predict names each image's expert and the classes of its super-class.
  r = run("predict -q " + dir.file("mv/last.safetensors") + " " + moejet::testing::test_data_dir() +
          "/cifar10_jpg/test/dog --format jsonl -k 3");
  ASSERT_EQ(r.code, 0) << r.output;
  int predicted = 0;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') {
      continue;
    }
    auto j = json::parse(line);
    ++predicted;
    ASSERT_EQ(j["top"].size(), 3u) << line;
    ASSERT_TRUE(j.contains("expert")) << line;
    EXPECT_LT(j["expert"].get<int>(), 5);
    ASSERT_TRUE(j.contains("superclass")) << line;
    EXPECT_FALSE(j["superclass"].empty());
  }
  EXPECT_EQ(predicted, 10);
  // Its TorchScript export has the router as `route`, and names the super-classes beside it.
  r = run("export " + dir.file("mv/last.safetensors") + " -o " + dir.file("mv.pt"));
  ASSERT_EQ(r.code, 0) << r.output;
  auto side = read_json_file(dir.file("mv.json"));
  EXPECT_TRUE(side["outputs"].contains("route")) << side.dump();
  EXPECT_EQ(side["superclasses"]["superclass_of"].size(), 10u);
  r = run("export " + dir.file("mv/last.safetensors") + " --format timm -o " + dir.file("mv.safetensors"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "an MoE model has no timm layout")) << r.output;

  // Super-classes for another class count are refused before training starts.
  { std::ofstream(dir.file("bad.json")) << R"({"num_superclasses": 2, "superclass_of": [0, 1, 0]})"; }
  r = run("train -q --config " + src + "/configs/vit_fmnist_mobile_vmoe.json --out " + dir.file("bad") +
          " --epochs 1 --set train.superclasses=" + dir.file("bad.json") + small);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "has 3 classes but the model/data set has 10")) << r.output;
}

TEST(Cli, MainJobPipelineRunsEndToEndAndWritesEveryArtefact) {
  // The main job (scripts/main_job.sh) on tiny versions of configs/main/*.json: seconds, not minutes.
  moejet::testing::TempDir dir;
  const std::string src = MOEJET_SOURCE_DIR;
  std::filesystem::create_directories(dir.file("configs"));
  for (std::string name :
       {"upstream_dense", "dense_scratch", "dense_finetune", "softmoe_scratch", "jetmoe", "mobile_vmoe"}) {
    auto cfg = read_json_file(src + "/configs/main/" + name + ".json");
    cfg["model"]["embed_dim"] = 32;
    cfg["model"]["num_heads"] = 2;
    cfg["data"]["train_limit"] = name == "upstream_dense" ? 512 : 128;
    cfg["data"]["eval_limit"] = 64;
    cfg["train"]["epochs"] = 2;
    cfg["train"]["batch_size"] = 64;
    cfg["train"]["log_every"] = 1;
    write_json_file(dir.file("configs/" + name + ".json"), cfg);
  }
  const std::string build_dir = std::filesystem::path(MOEJET_BINARY).parent_path().parent_path().string();
  const auto job = [&](const std::string& configs, int slots) {
    return "MOEJET_BUILD_DIR=" + build_dir + " MOEJET_MAIN_CONFIGS=" + configs + " MOEJET_RUNS=" + dir.file("runs") +
           " MOEJET_MAIN_SEEDS='0 1' MOEJET_MAIN_JOBS=" + std::to_string(slots) + " bash " + src +
           "/scripts/main_job.sh";
  };
  // A slot count below one is refused before anything is written.
  auto r = run_shell(job(dir.file("configs"), 0));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "MOEJET_MAIN_JOBS='0'")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("runs")));
  // Three runs side by side: every one must still wait for its inputs (the recycled checkpoints,
  // the super-classes from the fine-tuned dense run).
  r = run_shell(job(dir.file("configs"), 3));
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string output = r.output;
  EXPECT_TRUE(contains(output, "3 at a time")) << output;
  EXPECT_TRUE(contains(output, "[14/14] ")) << output;  // upstream, 2 recycles, super-classes, 10 runs
  size_t started = 0;
  for (auto at = output.find(" started\n"); at != std::string::npos; at = output.find(" started\n", at + 1))
    ++started;
  EXPECT_EQ(started, 14u) << output;  // and a line when each one starts

  const std::string runs = dir.file("runs/main");
  for (std::string f : {"upstream5/best.safetensors", "init/jetmoe.safetensors", "init/jetmoe.recycle.json",
                        "init/mobile_vmoe.safetensors", "superclasses.json", "report/report.md", "report/accuracy.svg",
                        "report/loss.svg", "report/expert_load.svg"}) {
    EXPECT_TRUE(file_exists(runs + "/" + f)) << f << "\n" << output;
  }
  // Every method with each seed, evaluated before its first step and after every second epoch
  // (the configs' eval_every: 2): of 2 epochs, after the second only.
  for (std::string name : {"jetmoe", "dense_finetune", "dense_scratch", "softmoe_scratch", "mobile_vmoe"}) {
    for (std::string seed : {"seed0", "seed1"}) {
      const std::string run = name + "/" + seed;
      EXPECT_TRUE(file_exists(runs + "/" + run + "/best.safetensors")) << run;
      int evals = 0, start = 0, second = 0;
      for (const auto& j : moejet::testing::read_jsonl(runs + "/" + run + "/metrics.jsonl")) {
        evals += j["event"] == "eval";
        start += j["event"] == "eval" && j["epoch"] == -1 && j["step"] == 0;
        second += j["event"] == "eval" && j["epoch"] == 1;
      }
      EXPECT_EQ(evals, 2) << run;
      EXPECT_EQ(start, 1) << run;
      EXPECT_EQ(second, 1) << run;
      EXPECT_EQ(read_json_file(runs + "/" + run + "/config.json")["train"]["seed"], seed == "seed0" ? 0 : 1);
      EXPECT_TRUE(file_exists(runs + "/logs/" + name + "-" + seed + ".log")) << run;
    }
  }
  auto recycle_report = read_json_file(runs + "/init/jetmoe.recycle.json");
  EXPECT_EQ(recycle_report["method"], "importance");
  auto md_bytes = read_file_bytes(runs + "/report/report.md");
  const std::string md(md_bytes.begin(), md_bytes.end());
  for (std::string label :
       {"MoE Jetpack (SpheroMoE, recycled)", "dense, fine-tuned", "dense, scratch", "Soft MoE, scratch",
        "Mobile V-MoE (recycled, super-classes)", "accuracy.svg", "expert_load.svg", "loss.svg", "| sphero |",
        "Param (M)", "| 2 |", " ± ", "| start |",
        // the expert load per group, SpheroMoE's core and universal experts apart
        "| 5 | sphero | core 8 |", "| 5 | sphero | universal 16 |", "| 5 | soft | experts 16 | 100.0% |"}) {
    EXPECT_TRUE(contains(md, label)) << label << "\n" << md;
  }
  auto load_svg = read_file_bytes(runs + "/report/expert_load.svg");
  const std::string ls(load_svg.begin(), load_svg.end());
  for (std::string part : {"MoE Jetpack (SpheroMoE, recycled): block 5 (sphero)", "core (8 experts, ",
                           "universal (16 experts, ", "Soft MoE, scratch: block 5 (soft)"}) {
    EXPECT_TRUE(contains(ls, part)) << part << "\n" << ls.substr(0, 400);
  }
  auto svg = read_file_bytes(runs + "/report/accuracy.svg");
  const std::string s(svg.begin(), svg.end());
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n') > 10, true);
  EXPECT_TRUE(contains(s, "<polyline")) << s.substr(0, 300);
  // A rerun reuses the upstream checkpoint instead of training it again, and one run at a time
  // gives the numbers three side by side gave: each run has its own single thread.
  std::map<std::string, std::vector<std::string>> losses;
  const auto eval_losses = [&](const std::string& run) {
    std::vector<std::string> out;
    for (const auto& j : moejet::testing::read_jsonl(runs + "/" + run + "/metrics.jsonl")) {
      if (j["event"] == "eval")
        out.push_back(j["loss"].dump());
    }
    return out;
  };
  const std::vector<std::string> compared = {"jetmoe/seed1", "mobile_vmoe/seed0", "softmoe_scratch/seed1"};
  for (const auto& run : compared)
    losses[run] = eval_losses(run);
  r = run_shell(job(dir.file("configs"), 1));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "reusing")) << r.output;
  EXPECT_TRUE(contains(r.output, "1 at a time")) << r.output;
  for (const auto& run : compared) {
    EXPECT_EQ(eval_losses(run), losses[run]) << run;
    EXPECT_EQ(losses[run].size(), 2u) << run;
  }

  // An upstream run that did not finish (stopped, its metrics.jsonl without the "done" line) is
  // resumed, not reused: a stopped run has a best.safetensors too.
  {
    std::vector<std::string> lines;
    std::ifstream in(runs + "/upstream5/metrics.jsonl");
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
    ASSERT_TRUE(contains(lines.back(), "\"event\":\"done\"")) << lines.back();
    lines.pop_back();
    std::ofstream out(runs + "/upstream5/metrics.jsonl");
    for (const auto& line : lines)
      out << line << "\n";
  }
  // A run that fails stops the job: it names the run and shows the end of its log, and no report
  // is written over the last one.
  std::filesystem::copy(dir.file("configs"), dir.file("broken"));
  { std::ofstream(dir.file("broken/softmoe_scratch.json")) << "{ not json"; }
  std::filesystem::remove_all(runs + "/report");
  r = run_shell(job(dir.file("broken"), 2));
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "!! softmoe_scratch-seed")) << r.output;
  EXPECT_TRUE(contains(r.output, "softmoe_scratch.json")) << r.output;  // the log's end names the file
  EXPECT_TRUE(contains(r.output, "upstream dense ViT: pre-training")) << r.output;
  EXPECT_FALSE(contains(r.output, "reusing")) << r.output;
  EXPECT_FALSE(file_exists(runs + "/report/report.md"));
}

TEST(Cli, TwoProcessDataParallelMatchesOneProcessWithTheSameGlobalBatch) {
  if (!train::distributed_available())
    GTEST_SKIP() << "built without c10d/Gloo headers";
  moejet::testing::TempDir dir;
  const std::string common = "train -q --config " + std::string(MOEJET_SOURCE_DIR) +
                             "/configs/vit_fmnist.json --epochs 1 --max-steps 4 --workers 1"
                             " --set data.train_limit=512 --set data.eval_limit=64 --set model.embed_dim=32"
                             " --set model.num_heads=2 --set model.drop_path_rate=0 --set augment.hflip=0";
  auto r = run(common + " --batch-size 64 --out " + dir.file("one"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run(common + " --batch-size 64 --out " + dir.file("two") + " --nproc 2");
  ASSERT_EQ(r.code, 0) << r.output;
  // The ranks agree with each other (checked by all-reduce at the epoch end) ...
  bool synced = false;
  for (const auto& j : moejet::testing::read_jsonl(dir.file("two/metrics.jsonl"))) {
    if (j["event"] == "sync") {
      EXPECT_EQ(j["world_size"], 2);
      EXPECT_EQ(j["max_param_divergence"].get<double>(), 0.0) << j;
      synced = true;
    }
  }
  EXPECT_TRUE(synced);
  // ... and with one process on the same global batch, to float tolerance.
  auto a = io::read_checkpoint(dir.file("one/last.safetensors"));
  auto b = io::read_checkpoint(dir.file("two/last.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    ASSERT_NE(b.find(item.key()), nullptr) << item.key();
    EXPECT_TRUE(moejet::testing::all_close(b[item.key()], item.value(), 1e-4, 1e-5)) << item.key();
  }
  // A global batch that does not split over the processes is refused.
  r = run(common + " --out " + dir.file("odd") + " --nproc 2 --batch-size 63");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "must split evenly over 2 processes")) << r.output;
}

TEST(Cli, AMissingPeerEndsTheRunWithAClearErrorInsteadOfHanging) {
  if (!train::distributed_available())
    GTEST_SKIP() << "built without c10d/Gloo headers";
  moejet::testing::TempDir dir;
  // Rank 0 of 2 with no rank 1 anywhere: the rendezvous times out after 3 s.
  auto r = run_shell("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29731 MOEJET_DIST_TIMEOUT=3 " +
                     std::string(MOEJET_BINARY) + " train -q --config " + MOEJET_SOURCE_DIR +
                     "/configs/vit_fmnist.json --epochs 1 --set data.train_limit=128 --out " + dir.file("x"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "distributed: rank 0/2")) << r.output;
}

TEST(Cli, TheLauncherForwardsSignalsAndNeverLeavesAWorkerBehind) {
  if (!train::distributed_available())
    GTEST_SKIP() << "built without c10d/Gloo headers";
  moejet::testing::TempDir dir;
  // A run far longer than the test: it only ends by the signals sent below.
  const std::string train = std::string(MOEJET_BINARY) + " train -q --config " + MOEJET_SOURCE_DIR +
                            "/configs/vit_fmnist.json --epochs 50 --nproc 2 --batch-size 16 --workers 1"
                            " --set data.train_limit=2048 --set data.eval_limit=64 --set model.depth=1"
                            " --set model.embed_dim=16 --set model.num_heads=2";
  // Starts the launcher, waits for both workers to train, runs `act`, then reports whether every
  // process was gone within 60 s (a zombie counts as gone: only its parent can reap it).
  const std::string helpers = R"(
    gone() { s=$(ps -o stat= -p "$1" 2>/dev/null); [ -z "$s" ] || [ "${s#Z}" != "$s" ]; }
    start() {
      MOEJET_KILL_GRACE=2 )" + train +
                              R"( --out "$1" > "$1.log" 2>&1 & L=$!
      for i in $(seq 600); do
        W=$(pgrep -P $L | tr '\n' ' ')
        [ $(echo $W | wc -w) -eq 2 ] && grep -q '"event":"train"' "$1/metrics.jsonl" 2>/dev/null && break
        sleep 0.1
      done
    }
    finish() {
      for i in $(seq 600); do
        all=1; for p in $L $W; do gone $p || all=0; done
        [ $all -eq 1 ] && break; sleep 0.1
      done
      for p in $L $W; do gone $p || { echo "STILL RUNNING $p"; kill -9 $p; }; done
      wait $L 2>/dev/null; echo "launcher exit $?"
    }
  )";
  // 1. One worker stopped (SIGSTOP), the other killed: the launcher SIGKILLs the stopped one after
  //    the grace period instead of waiting for ever.
  auto r = run_shell(helpers + "start " + dir.file("stopped") + "; set -- $W; kill -STOP $2; kill -9 $1; finish; cat " +
                     dir.file("stopped.log"));
  EXPECT_FALSE(contains(r.output, "STILL RUNNING")) << r.output;
  EXPECT_TRUE(contains(r.output, "still running 2 s after being asked to stop; killing them")) << r.output;
  EXPECT_TRUE(contains(r.output, "launcher exit 137")) << r.output;
  // 2. The launcher killed outright: the workers stop too (and checkpoint on their way out).
  r = run_shell(helpers + "start " + dir.file("orphans") + "; kill -9 $L; finish");
  EXPECT_FALSE(contains(r.output, "STILL RUNNING")) << r.output;
  // 3. Ctrl-C to the launcher reaches the workers once: they agree on a step, write a resumable
  //    checkpoint and end with 130, and so does the launcher.
  r = run_shell(helpers + "start " + dir.file("ctrl-c") + "; kill -INT $L; finish; cat " + dir.file("ctrl-c.log"));
  EXPECT_FALSE(contains(r.output, "STILL RUNNING")) << r.output;
  EXPECT_TRUE(contains(r.output, "launcher exit 130")) << r.output;
  EXPECT_TRUE(contains(r.output, "forwarding Interrupt to the workers")) << r.output;
  EXPECT_TRUE(contains(r.output, "interrupted (Ctrl-C) after step")) << r.output;
  bool state = false;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("ctrl-c"))) {
    state = state || e.path().filename().string().rfind("last.state-", 0) == 0;
  }
  EXPECT_TRUE(state) << "no resumable checkpoint";
}

TEST(Cli, AKill9AtAnyMomentThenResumeEndsBitIdentical) {
  moejet::testing::TempDir dir;
  const std::string train = std::string(MOEJET_BINARY) + " train -q --config " + MOEJET_SOURCE_DIR +
                            "/configs/vit_fmnist.json --set data.train_limit=1024 --set data.eval_limit=64"
                            " --set model.depth=2 --set model.embed_dim=32 --set model.num_heads=2"
                            " --batch-size 32 --epochs 3 --workers 1 --out ";
  auto r = run_shell(train + dir.file("ref"));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ref = read_file_bytes(dir.file("ref/last.safetensors"));
  // SIGKILL at a seeded spread of moments after the run folder appears (the 96 steps take about
  // 0.8 s here): inside epochs, in evaluations and checkpoint writes, after the end. Whatever it
  // hit, --resume gives the uninterrupted run's weights, and no temporary file is left.
  std::mt19937 rng(18);
  for (int k = 0; k < 8; ++k) {
    const double delay = 0.12 * k + std::uniform_real_distribution<double>(0, 0.1)(rng);
    const std::string out = dir.file("kill" + std::to_string(k));
    r = run_shell(train + out + " & p=$!; while [ ! -f " + out +
                  "/config.json ] && kill -0 $p 2>/dev/null; do sleep 0.01; done; sleep " + std::to_string(delay) +
                  "; kill -9 $p; wait $p");
    r = run_shell(train + out + " --resume");
    ASSERT_EQ(r.code, 0) << "delay " << delay << "\n" << r.output;
    std::printf("kill -9 %.2f s into the run: %s\n", delay,
                contains(r.output, "resumed from")
                    ? r.output
                          .substr(r.output.find("after step"),
                                  r.output.find('\n', r.output.find("after step")) - r.output.find("after step"))
                          .c_str()
                    : "nothing to resume");
    EXPECT_EQ(read_file_bytes(out + "/last.safetensors"), ref) << "delay " << delay << "\n" << r.output;
    int temp_files = 0;
    for (const auto& e : std::filesystem::directory_iterator(out)) {
      temp_files += e.path().filename().string().find(".tmp.") != std::string::npos;
    }
    EXPECT_EQ(temp_files, 0) << "delay " << delay;
  }
}
