// The rendezvous' set_once and the survivors' agreement on a re-formed group (dist/elastic.h),
// for both rendezvous kinds. Each "process" is a thread with a Rendezvous of its own; the
// processes that re-form real groups and train on are in tests/train/data_parallel_test.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dist/elastic.h"
#include "dist/rendezvous.h"

namespace dlsys::dist {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

class ElasticTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dlsys-elastic-" + std::to_string(::getpid()) + "-" + GetParam());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // The process that serves tcp:// (rank 0 of the first group), for the whole test, on a port
    // the kernel picks.
    auto s = GetParam() == "tcp"
                 ? Rendezvous::serve_on_free_port("127.0.0.1", milliseconds(5000))
                 : Rendezvous::open("file://" + (dir_ / "rv").string(), true, milliseconds(5000));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    url_ = server_->url();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::shared_ptr<Rendezvous> client() {
    auto r = Rendezvous::open(url_, false, milliseconds(5000));
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : nullptr;
  }

  // Ids `ids` of generation 0 (world 4) re-form at once, each on its own thread and
  // rendezvous (id 0 on the one that serves tcp://), after `delay[i]`, naming `suspects[i]` as
  // silent.
  std::vector<Result<Membership>> reform_all(const std::vector<int>& ids, int min_workers,
                                             int64_t divides, milliseconds window,
                                             std::vector<milliseconds> delay = {},
                                             std::vector<std::vector<int>> suspects = {}) {
    std::vector<Result<Membership>> out(ids.size(), Status::Invalid("not run"));
    std::vector<std::shared_ptr<Rendezvous>> rvs;
    for (int id : ids) rvs.push_back(id == 0 ? server_ : client());
    delay.resize(ids.size(), milliseconds(0));
    suspects.resize(ids.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < ids.size(); ++i)
      threads.emplace_back([&, i] {
        if (!rvs[i]) return;
        std::this_thread::sleep_for(delay[i]);
        ReformOptions o;
        o.id = ids[i];
        o.min_workers = min_workers;
        o.divides = divides;
        o.window = window;
        o.suspects = suspects[i];
        out[i] = reform(*rvs[i], first_membership(ids[i], 4), o);
      });
    for (auto& t : threads) t.join();
    return out;
  }

  fs::path dir_;
  std::string url_;
  std::shared_ptr<Rendezvous> server_;
};

TEST_P(ElasticTest, SetOnceKeepsTheFirstValueForEveryWriter) {
  std::vector<std::string> got(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      auto rv = client();
      if (!rv) return;
      auto v = rv->set_once("claim", "writer " + std::to_string(i));
      got[static_cast<size_t>(i)] = v.ok() ? *v : v.status().to_string();
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(got[0].rfind("writer ", 0), 0u) << got[0];
  for (const std::string& g : got) EXPECT_EQ(g, got[0]) << "two writers both won the claim";
  // A later set_once reads the winner; a plain set overwrites.
  auto late = server_->set_once("claim", "late");
  ASSERT_TRUE(late.ok()) << late.status().to_string();
  EXPECT_EQ(*late, got[0]);
  ASSERT_TRUE(server_->set("claim", "over").ok());
  EXPECT_EQ(**server_->get("claim", milliseconds(0)), "over");
  EXPECT_FALSE(*server_->get("absent", milliseconds(20))) << "a missing key read as present";
  // Keys with any bytes are kept apart (the folder escapes them).
  ASSERT_TRUE(server_->set("a/b", "1").ok());
  ASSERT_TRUE(server_->set("a%2Fb", "2").ok());
  EXPECT_EQ(**server_->get("a/b", milliseconds(0)), "1");
  EXPECT_EQ(**server_->get("a%2Fb", milliseconds(0)), "2");
}

// Ranks 0, 2 and 3 of 4 survive rank 1: they agree on one list; with 4 micro-batches the group
// is ranks 0 and 2 (world 2), and rank 3 is not needed. The join stays open for the window (a
// rank is missing), not much longer.
TEST_P(ElasticTest, SurvivorsAgreeOnTheLargestWorldThatSharesTheMicroBatches) {
  const auto t0 = std::chrono::steady_clock::now();
  auto got = reform_all({0, 2, 3}, 2, 4, milliseconds(1500));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, milliseconds(1400)) << "the join closed before the window, with a rank missing";
  EXPECT_LT(took, milliseconds(8000));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status().to_string();
    EXPECT_EQ(got[i]->generation, 1);
    EXPECT_EQ(got[i]->members, (std::vector<int>{0, 2}));
  }
  EXPECT_EQ(got[0]->rank, 0);
  EXPECT_EQ(got[1]->rank, 1);
  EXPECT_EQ(got[2]->rank, -1);
  EXPECT_EQ(got[2]->left_out, "not needed");
  // Generation 1 is claimed already: a later re-formation reads the same decision back, even
  // with other flags (every survivor follows the claim, not its own --min-workers).
  auto again = reform_all({0, 2, 3}, 1, 0, milliseconds(1500));
  for (auto& a : again) {
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ(a->members, (std::vector<int>{0, 2})) << "a second claim replaced the first";
  }
}

TEST_P(ElasticTest, ThreeSurvivorsWithoutAConstraintAllGoOn) {
  auto got = reform_all({0, 2, 3}, 3, 0, milliseconds(1500));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status().to_string();
    EXPECT_EQ(got[i]->members, (std::vector<int>{0, 2, 3}));
    EXPECT_EQ(got[i]->rank, static_cast<int>(i));
  }
}

// A survivor that comes after the others closed the join is left out, with the reason.
TEST_P(ElasticTest, ARankThatComesAfterTheClaimIsLeftOut) {
  auto first = reform_all({0, 1}, 2, 4, milliseconds(1000));
  ASSERT_TRUE(first[0].ok()) << first[0].status().to_string();
  EXPECT_EQ(first[0]->members, (std::vector<int>{0, 1}));
  auto late = reform_all({2}, 2, 4, milliseconds(1000));
  ASSERT_TRUE(late[0].ok()) << late[0].status().to_string();
  EXPECT_EQ(late[0]->rank, -1);
  EXPECT_EQ(late[0]->left_out, "late");
}

TEST_P(ElasticTest, FewerSurvivorsThanMinWorkersStopWithTheRanksThatCame) {
  auto got = reform_all({0, 1, 2}, 3, 4, milliseconds(1000));
  for (auto& g : got) {
    ASSERT_FALSE(g.ok());
    EXPECT_NE(g.status().message().find("2 workers would remain (ranks 0,1,2 of the first group "
                                        "came back; the world must divide the 4 micro-batches)"),
              std::string::npos)
        << g.status().to_string();
    EXPECT_NE(g.status().message().find("fewer than --min-workers 3"), std::string::npos);
  }
}

// Every rank coming back means no rank was lost: nothing to re-form without, and the join
// closes as soon as the last one came (not after the window).
TEST_P(ElasticTest, AllRanksComingBackIsNotALoss) {
  const auto t0 = std::chrono::steady_clock::now();
  auto got = reform_all({0, 1, 2, 3}, 1, 4, milliseconds(20000));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(10000));
  for (auto& g : got) {
    ASSERT_FALSE(g.ok());
    EXPECT_NE(g.status().message().find("the failure was not a lost rank"), std::string::npos)
        << g.status().to_string();
  }
}

// A partition: rank 3 is cut off from the others but reaches the store. The three find it
// silent, it finds rank 0 silent: the majority's verdict leaves rank 3 out (it could not
// connect to them), and the others go on as 3.
TEST_P(ElasticTest, ARankMostFoundSilentIsLeftOut) {
  auto got = reform_all({0, 1, 2, 3}, 2, 0, milliseconds(5000), {}, {{3}, {3}, {3}, {0}});
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status().to_string();
    EXPECT_EQ(got[i]->members, (std::vector<int>{0, 1, 2}));
  }
  EXPECT_EQ(got[3]->rank, -1);
  EXPECT_EQ(got[3]->left_out, "silent");
  EXPECT_EQ(got[0]->rank, 0);
}

// Over tcp:// rank 0 serves the store: even accused by all the others it does not leave itself
// out (the store would go with it). Here that keeps every rank in, so the run stops as for any
// failure every rank came back from.
TEST_P(ElasticTest, TheProcessServingTcpNeverLeavesItselfOut) {
  if (GetParam() != "tcp") GTEST_SKIP() << "file:// has no serving process";
  auto got = reform_all({0, 1, 2, 3}, 1, 0, milliseconds(5000), {}, {{}, {0}, {0}, {0}});
  for (auto& g : got) {
    ASSERT_FALSE(g.ok()) << "the run went on; rank " << g->rank << " of " << g->world();
    EXPECT_NE(g.status().message().find("all of its 4 ranks came back"), std::string::npos)
        << g.status().to_string();
  }
}

// Two halves that each find the other silent: no majority, so nobody is left out, every rank
// came back, and the run stops rather than split in two.
TEST_P(ElasticTest, AnEvenSplitStopsRatherThanFormTwoGroups) {
  auto got = reform_all({0, 1, 2, 3}, 1, 0, milliseconds(5000), {}, {{2}, {2}, {0}, {0}});
  for (auto& g : got) {
    ASSERT_FALSE(g.ok());
    EXPECT_NE(g.status().message().find("all of its 4 ranks came back"), std::string::npos)
        << g.status().to_string();
  }
}

// Over tcp:// only rank 0 (the server's process) decides: the others wait for it past the
// window, so a rank 0 slow to notice the failure is not left out (and gone with the store).
TEST_P(ElasticTest, ARankZeroSlowToNoticeIsWaitedFor) {
  if (GetParam() != "tcp") GTEST_SKIP() << "file:// lets any survivor decide";
  auto got = reform_all({0, 1, 2}, 1, 0, milliseconds(500),
                        {milliseconds(1500), milliseconds(0), milliseconds(0)});
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status().to_string();
    EXPECT_EQ(got[i]->members, (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(got[i]->rank, static_cast<int>(i));
  }
}

// A claim this run did not write (a reused folder, another program) is refused with what to do,
// never followed: repeated or unknown ids, a world past the list, numbers out of range.
TEST_P(ElasticTest, AClaimThatIsNotARunsDecisionIsRefused) {
  int g = 0;
  for (const std::string bad :
       {"came=1,1;silent=;world=2;min=1;divides=0;pow2=0",
        "came=0,9;silent=;world=2;min=1;divides=0;pow2=0",
        "came=0,1;silent=;world=3;min=1;divides=0;pow2=0",
        "came=0,1;silent=1;world=2;min=1;divides=0;pow2=0",
        "came=0,1;silent=;world=2147483648;min=1;divides=0;pow2=0", "garbage", ""}) {
    Membership failed = first_membership(0, 4);
    failed.generation = g++;
    ASSERT_TRUE(server_->set("members/" + std::to_string(g), bad).ok());
    ReformOptions o;
    o.window = milliseconds(100);
    auto r = reform(*server_, failed, o);
    ASSERT_FALSE(r.ok()) << "'" << bad << "' was followed";
    EXPECT_NE(r.status().message().find("use a fresh one"), std::string::npos)
        << r.status().to_string();
  }
}

INSTANTIATE_TEST_SUITE_P(Rendezvous, ElasticTest, ::testing::Values("tcp", "file"),
                         [](const auto& info) { return info.param; });

// tcp:// lives in the process that serves it: when that one is gone, the others are told so,
// and what to use instead.
TEST(ElasticTcpTest, TheStoreGoneWithRankZeroIsNamedWithTheRemedy) {
  auto server = Rendezvous::serve_on_free_port("127.0.0.1", milliseconds(2000));
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  auto rv = Rendezvous::open((*server)->url(), false, milliseconds(2000));
  ASSERT_TRUE(rv.ok()) << rv.status().to_string();
  server->reset();
  ReformOptions o;
  o.id = 1;
  auto r = reform(**rv, first_membership(1, 2), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("stopped answering"), std::string::npos)
      << r.status().to_string();
  EXPECT_NE(r.status().message().find("file://"), std::string::npos) << r.status().to_string();
}

// --nproc's store: served on a port the kernel picks (two at once get two ports), and clients
// of its url() read what it holds.
TEST(ElasticTcpTest, AStoreServedOnAFreePortIsReachedAtItsUrl) {
  auto a = Rendezvous::serve_on_free_port("127.0.0.1", milliseconds(2000));
  auto b = Rendezvous::serve_on_free_port("127.0.0.1", milliseconds(2000));
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_NE((*a)->url(), (*b)->url());
  EXPECT_EQ((*a)->url().rfind("tcp://127.0.0.1:", 0), 0u) << (*a)->url();
  ASSERT_TRUE((*a)->set("k", "from a").ok());
  auto client = Rendezvous::open((*a)->url(), false, milliseconds(2000));
  ASSERT_TRUE(client.ok()) << client.status().to_string();
  auto v = (*client)->get("k", milliseconds(0));
  ASSERT_TRUE(v.ok() && *v) << (*a)->url();
  EXPECT_EQ(**v, "from a");
}

}  // namespace
}  // namespace dlsys::dist
