// The process group on real processes: each rank is a child process of the test, joined over
// loopback through a tcp:// or file:// rendezvous, talking over Gloo's TCP transport.
//   - all_reduce_sum gives every rank the same bits, and for 1, 2 and 4 ranks exactly the
//     balanced tree sum one process computes of the same leaves (tree_sum): the data is made so
//     that other associations give other bits, which the test checks too;
//   - broadcast, all_gather, barrier;
//   - a rank killed (SIGKILL) is named by the others' errors well within the 10 s, a
//     stopped one (SIGSTOP) by the heartbeat, a silent but running rank after the timeout (and
//     not by the heartbeat), a rank that never comes by the rendezvous;
//   - bad options and URLs are refused before anything starts.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include <gloo/rendezvous/store.h>

#include "dist/bucket_reducer.h"
#include "dist/process_group.h"
#include "dist/rendezvous.h"
#include "testing/free_port.h"

namespace dlsys::dist {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

class ProcessGroupTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dlsys-dist-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A fresh rendezvous URL of the kind under test.
  std::string rendezvous() {
    if (GetParam() == "file") {
      fs::path d = dir_ / ("rdv" + std::to_string(counter_++));
      fs::create_directories(d);
      return "file://" + d.string();
    }
    return "tcp://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  }

  // Runs body(rank) in `world` child processes; returns their exit codes (-signal if killed).
  // A child still running at the deadline is killed and reported as -SIGKILL: no test hangs.
  std::vector<int> run(int world, const std::function<int(int)>& body,
                       std::chrono::seconds deadline = std::chrono::seconds(60)) {
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      pid_t p = ::fork();
      if (p == 0) {
        int code = 99;
        try {
          code = body(r);
        } catch (...) {
          code = 98;
        }
        ::_exit(code);
      }
      pids.push_back(p);
    }
    std::vector<int> codes(world, -1000);
    const auto end = Clock::now() + deadline;
    int left = world;
    while (left > 0) {
      int st = 0;
      pid_t p = ::waitpid(-1, &st, WNOHANG);
      if (p > 0) {
        for (int r = 0; r < world; ++r)
          if (pids[r] == p) codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
        --left;
        continue;
      }
      if (Clock::now() > end) {
        for (int r = 0; r < world; ++r)
          if (codes[r] == -1000) ::kill(pids[r], SIGKILL);
        ADD_FAILURE() << "ranks still running after " << deadline.count() << " s: killed";
        deadline = std::chrono::seconds(1 << 20);
      }
      // Children have no event to wait on from here but their exit: poll it.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return codes;
  }

  // Rank `rank`'s answer, for expect_sums.
  void write_floats(int rank, const std::vector<float>& x) {
    write_file(dir_ / ("out" + std::to_string(rank)),
               std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4));
  }
  // Every rank exited 0 (else its "err" file is shown) with `want`'s bits.
  void expect_sums(const std::vector<int>& codes, const std::vector<float>& want,
                   const std::string& what) {
    for (size_t r = 0; r < codes.size(); ++r) {
      ASSERT_EQ(codes[r], 0) << what << " rank " << r << ": "
                             << read_file(dir_ / ("err" + std::to_string(r)));
      std::string got = read_file(dir_ / ("out" + std::to_string(r)));
      ASSERT_EQ(got.size(), want.size() * 4);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size()), 0)
          << what << " rank " << r << ": not the bits of the expected association";
    }
  }

  void write_file(const fs::path& p, const std::string& s) {
    std::ofstream f(p, std::ios::binary);
    f << s;
  }
  std::string read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  fs::path dir_;
  static inline int counter_ = 0;
};

// Leaf j of M: values of very different magnitudes and signs, so (a + b) + c and a + (b + c)
// differ in many elements.
std::vector<float> leaf(int j, size_t n) {
  std::mt19937 g(1234 + j);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-12, 12);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::ldexp(u(g), e(g));
  return v;
}

// M leaves of n floats, and the tree sum one process computes of them (what every rank must
// end with).
struct Leaves {
  Leaves(int m, size_t n) : n(n), sum(n) {
    for (int j = 0; j < m; ++j) values.push_back(leaf(j, n));
    for (auto& l : values) ptrs.push_back(l.data());
    tree_sum(ptrs, n, sum.data());
  }
  // The tree sum of rank `rank`'s consecutive share of the leaves (of `world` ranks).
  std::vector<float> share(int rank, int world) const {
    const size_t per = ptrs.size() / static_cast<size_t>(world);
    std::vector<const float*> mine(ptrs.begin() + rank * per, ptrs.begin() + (rank + 1) * per);
    std::vector<float> x(n);
    tree_sum(mine, n, x.data());
    return x;
  }
  size_t n;
  std::vector<std::vector<float>> values;
  std::vector<const float*> ptrs;
  std::vector<float> sum;
};

GroupOptions opts(int rank, int world, const std::string& url, int timeout_ms = 20000) {
  GroupOptions o;
  o.rank = rank;
  o.world = world;
  o.rendezvous = url;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  return o;
}

TEST_P(ProcessGroupTest, AllReduceIsTheTreeSumOfTheLeavesForOneTwoAndFourRanks) {
  constexpr int M = 4;
  for (size_t n : {size_t{10007}, size_t{3}, size_t{1}}) {
    const Leaves leaves(M, n);
    const std::vector<float>& want = leaves.sum;
    if (n == 10007) {
      // The data tells associations apart: a left-to-right sum differs somewhere.
      const auto& v = leaves.values;
      size_t differ = 0;
      for (size_t i = 0; i < n; ++i) {
        float seq = ((v[0][i] + v[1][i]) + v[2][i]) + v[3][i];
        differ += std::memcmp(&seq, &want[i], 4) != 0;
      }
      EXPECT_GT(differ, n / 100) << "the leaves do not tell a sequential sum from the tree";
    }
    for (int world : {1, 2, 4}) {
      const std::string url = rendezvous();
      auto codes = run(world, [&](int rank) {
        auto g = ProcessGroup::connect(opts(rank, world, url));
        if (!g.ok()) {
          write_file(dir_ / ("err" + std::to_string(rank)), g.status().to_string());
          return 2;
        }
        // This rank's leaves, summed as a subtree, then reduced across the ranks.
        std::vector<float> x = leaves.share(rank, world);
        Status s = (*g)->all_reduce_sum(x.data(), n);
        if (!s.ok()) {
          write_file(dir_ / ("err" + std::to_string(rank)), s.to_string());
          return 3;
        }
        write_floats(rank, x);
        return 0;
      });
      expect_sums(codes, want, fmt::format("world {} n {}", world, n));
    }
  }
}

// Gradient buckets marked ready in any order (here the reverse of theirs on rank 0, and
// another on the others) are all-reduced in their own order on every rank, on the reducer's
// thread, with the bits of one all-reduce of the whole buffer; the link measurement gives every
// rank rank 0's figures.
TEST_P(ProcessGroupTest, BucketsReadyInAnyOrderGiveTheBitsOfOneAllReduce) {
  constexpr int M = 4;
  const Leaves leaves(M, 10007);
  for (int world : {2, 4}) {
    const std::string url = rendezvous();
    auto codes = run(world, [&](int rank) {
      auto g = ProcessGroup::connect(opts(rank, world, url));
      if (!g.ok()) return 2;
      auto link = measure_link(**g, 1 << 16);
      if (!link.ok()) {
        write_file(dir_ / ("err" + std::to_string(rank)), link.status().to_string());
        return 3;
      }
      write_file(dir_ / ("link" + std::to_string(rank)),
                 fmt::format("{} {}", link->latency_s, link->bytes_per_s));
      BucketReducer reducer(g->get(), {{7000, 10007}, {3000, 7000}, {0, 3000}});
      std::vector<float> x;
      for (int step = 0; step < 2; ++step) {
        x = leaves.share(rank, world);
        reducer.start(x.data());
        for (size_t b : rank == 0 ? std::vector<size_t>{2, 1, 0} : std::vector<size_t>{1, 0, 2})
          reducer.ready(b);
        Status s = reducer.finish();
        if (!s.ok()) {
          write_file(dir_ / ("err" + std::to_string(rank)), s.to_string());
          return 4;
        }
      }
      const BucketStats& st = reducer.stats();
      if (st.steps != 2 || st.buckets != 6 || st.comm_seconds <= 0) return 5;
      write_floats(rank, x);
      return 0;
    });
    expect_sums(codes, leaves.sum, fmt::format("buckets, world {}", world));
    const std::string link0 = read_file(dir_ / "link0");
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(read_file(dir_ / ("link" + std::to_string(r))), link0)
          << "rank " << r << " measured its own link instead of taking rank 0's";
    }
    double latency = 0, bandwidth = 0;
    ASSERT_EQ(std::sscanf(link0.c_str(), "%lf %lf", &latency, &bandwidth), 2) << link0;
    EXPECT_GT(latency, 0);
    EXPECT_GT(bandwidth, 1e6) << "loopback moves more than a MB/s";
  }
}

// Buckets fill from the last parameter backwards, never split one, and the size chosen keeps
// the latency at a tenth of a bucket's time, within 64 KiB and 16 MiB.
TEST(BucketLayoutTest, BucketsFromTheEndAndTheirSize) {
  // Parameters of 100, 20, 300, 4 and 50 floats.
  const std::vector<size_t> off = {0, 100, 120, 420, 424, 474};
  auto b = buckets_from_the_end(off, 200 * 4);  // at least 200 floats each
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].begin, 120u);  // 50 + 4 + 300 floats
  EXPECT_EQ(b[0].end, 474u);
  EXPECT_EQ(b[1].begin, 0u);  // the rest, even if smaller
  EXPECT_EQ(b[1].end, 120u);
  auto each = buckets_from_the_end(off, 4);
  ASSERT_EQ(each.size(), 5u);
  for (size_t i = 0; i < each.size(); ++i) {
    EXPECT_EQ(each[i].begin, off[off.size() - 2 - i]);
    EXPECT_EQ(each[i].end, off[off.size() - 1 - i]);
  }
  EXPECT_EQ(buckets_from_the_end(off, size_t{1} << 30).size(), 1u);
  EXPECT_TRUE(buckets_from_the_end({0}, 1024).empty());
  // An empty first parameter makes no empty bucket (one that nothing would mark ready).
  auto with_empty = buckets_from_the_end({0, 0, 10}, 4);
  ASSERT_EQ(with_empty.size(), 1u);
  EXPECT_EQ(with_empty[0].begin, 0u);
  EXPECT_EQ(with_empty[0].end, 10u);
  LinkEstimate slow{1e-3, 1e8, 0};  // 1 ms, 100 MB/s: 9 x 1e-3 x 1e8 = 900 kB
  EXPECT_EQ(choose_bucket_bytes(slow), 900000u);
  EXPECT_EQ(choose_bucket_bytes({1e-6, 1e8, 0}), 64u * 1024) << "at least 64 KiB";
  EXPECT_EQ(choose_bucket_bytes({1e-2, 1e10, 0}), 16u << 20) << "at most 16 MiB";
  // At most half the gradients (so that a bucket starts during the backward pass), at least
  // 64 KiB still.
  EXPECT_EQ(choose_bucket_bytes(slow, 1000000), 500000u);
  EXPECT_EQ(choose_bucket_bytes(slow, 4000000), 900000u);
  EXPECT_EQ(choose_bucket_bytes(slow, 100000), 64u * 1024);
}

// 3 ranks fold rank 2 into rank 0: ((x0 + x2) + x1) on every rank, the same bits everywhere.
TEST_P(ProcessGroupTest, AllReduceOfThreeRanksIsTheSameOnEveryRank) {
  const size_t n = 4099;
  std::vector<std::vector<float>> x;
  for (int r = 0; r < 3; ++r) x.push_back(leaf(10 + r, n));
  std::vector<float> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = (x[0][i] + x[2][i]) + x[1][i];
  const std::string url = rendezvous();
  auto codes = run(3, [&](int rank) {
    auto g = ProcessGroup::connect(opts(rank, 3, url));
    if (!g.ok()) return 2;
    std::vector<float> v = x[rank];
    // Twice: the slots of consecutive calls stay matched across ranks.
    for (int k = 0; k < 2; ++k) {
      v = x[rank];
      if (!(*g)->all_reduce_sum(v.data(), n).ok()) return 3;
    }
    write_floats(rank, v);
    return 0;
  });
  expect_sums(codes, want, "3 ranks");
}

TEST_P(ProcessGroupTest, BroadcastAllGatherAndBarrier) {
  const std::string url = rendezvous();
  auto codes = run(3, [&](int rank) {
    auto g = ProcessGroup::connect(opts(rank, 3, url));
    if (!g.ok()) return 2;
    std::string msg = rank == 1 ? "from rank one" : std::string(13, '?');
    if (!(*g)->broadcast(msg.data(), msg.size(), 1).ok() || msg != "from rank one") return 3;
    int mine = 100 + rank;
    int all[3] = {0, 0, 0};
    if (!(*g)->all_gather(&mine, sizeof(int), all).ok()) return 4;
    if (all[0] != 100 || all[1] != 101 || all[2] != 102) return 5;
    if (!(*g)->barrier().ok()) return 6;
    if ((*g)->broadcast(msg.data(), 1, 7).ok()) return 7;  // no rank 7
    return 0;
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

// A rank killed between collectives: the others' all-reduce fails, naming a rank, long before
// the 20 s timeout (the kernel closes the dead rank's sockets).
TEST_P(ProcessGroupTest, AKilledRankIsNamedWithinSeconds) {
  const std::string url = rendezvous();
  auto codes = run(3, [&](int rank) {
    auto g = ProcessGroup::connect(opts(rank, 3, url, 20000));
    if (!g.ok()) return 2;
    if (!(*g)->barrier().ok()) return 3;
    if (rank == 2) ::raise(SIGKILL);
    std::vector<float> v(1000, 1.0f);
    const auto t0 = Clock::now();
    Status s = (*g)->all_reduce_sum(v.data(), v.size());
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    write_file(dir_ / ("err" + std::to_string(rank)), s.to_string() + "\n" + std::to_string(secs));
    return s.ok() ? 4 : 0;
  });
  EXPECT_EQ(codes[2], -SIGKILL);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(codes[r], 0) << "rank " << r << " did not fail";
    std::string err = read_file(dir_ / ("err" + std::to_string(r)));
    EXPECT_NE(err.find("all-reduce"), std::string::npos) << err;
    EXPECT_NE(err.find("rank " + std::string(r == 0 ? "2" : "0")), std::string::npos) << err;
    double secs = std::stod(err.substr(err.rfind('\n') + 1));
    EXPECT_LT(secs, 10.0) << err;
  }
}

// A rank alive but silent: the others give up after the timeout, naming the rank they waited
// for.
TEST_P(ProcessGroupTest, ASilentRankFailsTheOthersAfterTheTimeout) {
  const std::string url = rendezvous();
  auto codes = run(2, [&](int rank) {
    auto g = ProcessGroup::connect(opts(rank, 2, url, 1000));
    if (!g.ok()) return 2;
    if (rank == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // the silence itself
      return 0;
    }
    std::vector<float> v(10, 1.0f);
    const auto t0 = Clock::now();
    Status s = (*g)->all_reduce_sum(v.data(), v.size());
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    write_file(dir_ / "err0", s.to_string());
    return !s.ok() && secs >= 0.9 && secs < 2.5 ? 0 : 4;
  });
  EXPECT_EQ(codes[0], 0) << read_file(dir_ / "err0");
  EXPECT_NE(read_file(dir_ / "err0").find("rank 1 did not answer within 1000 ms"),
            std::string::npos)
      << read_file(dir_ / "err0");
}

// A rank whose process stops (SIGSTOP: its heartbeat stops too) is given up by the others after
// the heartbeat's 1 s, long before the collective's 20 s timeout, and named by every other
// rank, even by rank 1, whose all-reduce waits on rank 0 and not on it.
TEST_P(ProcessGroupTest, AStoppedRankIsNamedByTheHeartbeatLongBeforeTheTimeout) {
  const std::string url = rendezvous();
  const fs::path pid_file = dir_ / "pid2";
  auto codes = run(3, [&](int rank) {
    GroupOptions o = opts(rank, 3, url, 20000);
    o.heartbeat = std::chrono::milliseconds(1000);
    auto g = ProcessGroup::connect(o);
    if (!g.ok()) return 2;
    if (!(*g)->barrier().ok()) return 3;
    if (rank == 2) {
      write_file(pid_file, std::to_string(::getpid()));
      ::raise(SIGSTOP);
      return 5;  // continued: the test failed anyway
    }
    std::vector<float> v(1000, 1.0f);
    const auto t0 = Clock::now();
    Status s = (*g)->all_reduce_sum(v.data(), v.size());
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    write_file(dir_ / ("err" + std::to_string(rank)), s.to_string() + "\n" + std::to_string(secs));
    // A later collective fails at once with the same reason.
    Status again = (*g)->barrier();
    if (rank == 0) {
      // Rank 1 still waits on rank 0: it must see rank 2's silence before rank 0 exits.
      for (const auto end = Clock::now() + std::chrono::seconds(15);
           !fs::exists(dir_ / "err1") && Clock::now() < end;)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      ::kill(static_cast<pid_t>(std::stol(read_file(pid_file))), SIGKILL);
    }
    return !s.ok() && again.message().find("rank 2 sent no heartbeat") != std::string::npos ? 0 : 4;
  });
  EXPECT_EQ(codes[2], -SIGKILL);
  for (int r = 0; r < 2; ++r) {
    std::string err = read_file(dir_ / ("err" + std::to_string(r)));
    EXPECT_EQ(codes[r], 0) << "rank " << r << ": " << err;
    EXPECT_NE(err.find("all-reduce"), std::string::npos) << err;
    EXPECT_NE(err.find("rank 2 sent no heartbeat for"), std::string::npos) << err;
    double secs = std::stod(err.substr(err.rfind('\n') + 1));
    EXPECT_GE(secs, 0.9) << err;
    EXPECT_LT(secs, 10.0) << err;
  }
}

// A rank busy for longer than the heartbeat's limit (its main thread away, its process
// running) is not given up: the collective waits for it, within the collective's timeout. A
// rank that ends normally is not taken for a silent one either.
TEST_P(ProcessGroupTest, ARankBusyLongerThanTheHeartbeatIsWaitedFor) {
  const std::string url = rendezvous();
  auto codes = run(2, [&](int rank) {
    GroupOptions o = opts(rank, 2, url, 20000);
    o.heartbeat = std::chrono::milliseconds(1000);
    auto g = ProcessGroup::connect(o);
    if (!g.ok()) return 2;
    if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    std::vector<float> v(10, 1.0f);
    Status s = (*g)->all_reduce_sum(v.data(), v.size());
    if (!s.ok() || v[0] != 2.0f) {
      write_file(dir_ / ("err" + std::to_string(rank)), s.to_string());
      return 4;
    }
    if (rank == 0) return 0;  // ends, saying goodbye to rank 1
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    write_file(dir_ / "err1", (*g)->lost().to_string());
    return (*g)->lost().ok() ? 0 : 5;
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(codes[r], 0) << "rank " << r << ": " << read_file(dir_ / ("err" + std::to_string(r)));
}

// Every rank stopped at once for longer than the heartbeat's limit (Ctrl-Z of the whole job, a
// paused VM) and then continued: each saw the silence as its own, and the group goes on.
TEST_P(ProcessGroupTest, RanksStoppedTogetherAndContinuedGoOn) {
  const std::string url = rendezvous();
  std::thread conductor([&] {
    std::vector<pid_t> pids;
    for (int r = 0; r < 2; ++r) {
      const fs::path ready = dir_ / ("ready" + std::to_string(r));
      for (const auto end = Clock::now() + std::chrono::seconds(30);
           !fs::exists(ready) && Clock::now() < end;)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      std::string pid = read_file(ready);
      if (!pid.empty()) pids.push_back(static_cast<pid_t>(std::stol(pid)));
    }
    for (pid_t p : pids) ::kill(p, SIGSTOP);
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // three heartbeat limits
    for (pid_t p : pids) ::kill(p, SIGCONT);
    write_file(dir_ / "continued", "1");
  });
  auto codes = run(2, [&](int rank) {
    GroupOptions o = opts(rank, 2, url, 20000);
    o.heartbeat = std::chrono::milliseconds(1000);
    auto g = ProcessGroup::connect(o);
    if (!g.ok()) return 2;
    if (!(*g)->barrier().ok()) return 3;
    // Written whole before the conductor reads it: a temporary name, renamed.
    write_file(dir_ / ("tmp" + std::to_string(rank)), std::to_string(::getpid()));
    fs::rename(dir_ / ("tmp" + std::to_string(rank)), dir_ / ("ready" + std::to_string(rank)));
    for (const auto end = Clock::now() + std::chrono::seconds(30);
         !fs::exists(dir_ / "continued") && Clock::now() < end;)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // beats resume meanwhile
    std::vector<float> v(10, 1.0f);
    Status s = (*g)->all_reduce_sum(v.data(), v.size());
    write_file(dir_ / ("err" + std::to_string(rank)),
               s.to_string() + " / " + (*g)->lost().to_string());
    return s.ok() && v[0] == 2.0f && (*g)->lost().ok() ? 0 : 4;
  });
  conductor.join();
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(codes[r], 0) << "rank " << r << ": " << read_file(dir_ / ("err" + std::to_string(r)));
}

// Ranks started with other heartbeat limits (or none) are told to agree, rather than timing out
// or reporting each other.
TEST_P(ProcessGroupTest, RanksWithOtherHeartbeatLimitsAreToldToAgree) {
  const std::string url = rendezvous();
  auto codes = run(3, [&](int rank) {
    GroupOptions o = opts(rank, 3, url, 20000);
    // Rank 0 without one, rank 1 with 1 s, rank 2 with 2 s.
    o.heartbeat = std::chrono::milliseconds(rank * 1000);
    const auto t0 = Clock::now();
    auto g = ProcessGroup::connect(o);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    write_file(dir_ / ("err" + std::to_string(rank)), g.ok() ? "joined" : g.status().to_string());
    return !g.ok() && secs < 10 ? 0 : 4;
  });
  for (int r = 0; r < 3; ++r) {
    const std::string err = read_file(dir_ / ("err" + std::to_string(r)));
    EXPECT_EQ(codes[r], 0) << "rank " << r << ": " << err;
    EXPECT_NE(err.find("give every rank the same --heartbeat-s"), std::string::npos) << err;
  }
  EXPECT_NE(read_file(dir_ / "err1")
                .find("rank 0 runs with --heartbeat-s 0 (off) and this rank "
                      "with 1"),
            std::string::npos)
      << read_file(dir_ / "err1");
}

// Only rank 0 of 2 comes: joining fails after the timeout, naming rank 1.
TEST_P(ProcessGroupTest, ARankThatNeverComesIsNamedByTheRendezvous) {
  const std::string url = rendezvous();
  auto codes = run(1, [&](int) {
    const auto t0 = Clock::now();
    auto g = ProcessGroup::connect(opts(0, 2, url, 1000));
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    write_file(dir_ / "err0", g.ok() ? "joined" : g.status().to_string());
    return !g.ok() && secs < 8.0 ? 0 : 4;
  });
  EXPECT_EQ(codes[0], 0) << read_file(dir_ / "err0");
  EXPECT_NE(read_file(dir_ / "err0").find("rank 1 did not reach the rendezvous"), std::string::npos)
      << read_file(dir_ / "err0");
}

INSTANTIATE_TEST_SUITE_P(Rendezvous, ProcessGroupTest, ::testing::Values("tcp", "file"),
                         [](const auto& info) { return info.param; });

// The tcp:// store of rank 0: a malformed frame or an oversized key closes that connection
// only; the store goes on answering its clients.
TEST(RendezvousStoreTest, MalformedFramesCloseOnlyTheirConnection) {
  const int port = testing::free_loopback_port();
  const std::string url = "tcp://127.0.0.1:" + std::to_string(port);
  auto store = open_rendezvous(url, 0, 0, std::chrono::milliseconds(2000));
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  (*store)->set("a", {'x', 'y'});
  for (std::string junk : {std::string("Zgarbage"), std::string("S\xff\xff\xff\x7f")}) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_EQ(::send(fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    // Closed: an end of stream, or a reset (the junk left unread in the server's buffer).
    const ssize_t k = ::recv(fd, &c, 1, 0);
    EXPECT_TRUE(k == 0 || (k < 0 && errno == ECONNRESET))
        << "the server did not close a connection sending junk: " << k << " " << errno;
    ::close(fd);
  }
  EXPECT_EQ((*store)->get("a"), (std::vector<char>{'x', 'y'}));
  // A second rank 0 on the same port is refused with the reason.
  auto again = open_rendezvous(url, 0, 0, std::chrono::milliseconds(500));
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("cannot serve the rendezvous"), std::string::npos)
      << again.status().to_string();
}

TEST(RendezvousUrlTest, BadUrlsAndOptionsAreRefusedWithTheReason) {
  EXPECT_TRUE(parse_rendezvous_url("tcp://10.0.0.1:29500").ok());
  EXPECT_TRUE(parse_rendezvous_url("tcp://[::1]:29500").ok());
  EXPECT_EQ(parse_rendezvous_url("tcp://[::1]:29500")->host, "::1");
  EXPECT_TRUE(parse_rendezvous_url("file:///tmp/x").ok());
  for (auto [url, word] : std::vector<std::pair<std::string, std::string>>{
           {"tcp://host", "HOST:PORT"},
           {"tcp://host:0", "1..65535"},
           {"tcp://host:70000", "1..65535"},
           {"tcp://host:x1", "not a number"},
           {"file://relative", "absolute"},
           {"http://x:1", "tcp://HOST:PORT or file://"}}) {
    auto r = parse_rendezvous_url(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_NE(r.status().message().find(word), std::string::npos) << r.status().to_string();
  }
  GroupOptions o;
  o.rendezvous = "tcp://127.0.0.1:1";
  o.world = 2;
  o.rank = 2;
  EXPECT_NE(ProcessGroup::connect(o).status().message().find("rank 2 is not in 0..1"),
            std::string::npos);
  o.rank = 0;
  o.world = 0;
  EXPECT_FALSE(ProcessGroup::connect(o).ok());
  o.world = 2;
  o.heartbeat = std::chrono::milliseconds(100);
  EXPECT_NE(ProcessGroup::connect(o).status().message().find(
                "the heartbeat's limit is 100 ms: use 0 (off) or 500 ms to an hour"),
            std::string::npos);
}

}  // namespace
}  // namespace dlsys::dist
