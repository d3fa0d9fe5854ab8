// The scheduler on its own: slots, the order of the jobs waiting for one,
// one job per jname, max_waiting. No processes, no sockets.
#include "bs_router/scheduler.hpp"

#include <gtest/gtest.h>

namespace {

using bs_router::scheduler;
using placement = scheduler::placement;
using keys = std::vector<scheduler::key>;

TEST(Scheduler, JobsRunUpToTheSlotsThenWaitInTheirOrder) {
  scheduler s(2, 10);
  EXPECT_EQ(s.admit(1, ""), placement::runs);
  EXPECT_EQ(s.admit(2, ""), placement::runs);
  EXPECT_EQ(s.admit(3, ""), placement::waits_for_slot);
  EXPECT_EQ(s.admit(4, ""), placement::waits_for_slot);
  EXPECT_EQ(s.free_slots(), 0u);
  EXPECT_EQ(s.finished(2), keys{3});
  EXPECT_EQ(s.finished(1), keys{4});
  EXPECT_EQ(s.finished(3), keys{});
  EXPECT_EQ(s.running(), 1u);
  EXPECT_EQ(s.free_slots(), 1u);
}

TEST(Scheduler, OneJobPerJnameTheOthersWaitBehindItInOrder) {
  scheduler s(4, 10);
  EXPECT_EQ(s.admit(1, "a"), placement::runs);
  EXPECT_EQ(s.admit(2, "a"), placement::waits_for_jname);
  EXPECT_EQ(s.admit(3, "b"), placement::runs);
  EXPECT_EQ(s.admit(4, "a"), placement::waits_for_jname);
  EXPECT_EQ(s.waiting_for_jname(), 2u);
  EXPECT_TRUE(s.busy("a"));
  EXPECT_EQ(s.finished(1), keys{2});
  EXPECT_EQ(s.finished(2), keys{4});
  EXPECT_EQ(s.finished(4), keys{});
  EXPECT_FALSE(s.busy("a"));
  EXPECT_TRUE(s.busy("b"));
}

TEST(Scheduler, AJobWaitingForASlotHoldsItsJname) {
  scheduler s(1, 10);
  EXPECT_EQ(s.admit(1, ""), placement::runs);
  EXPECT_EQ(s.admit(2, "a"), placement::waits_for_slot);
  EXPECT_EQ(s.admit(3, "a"), placement::waits_for_jname);
  EXPECT_EQ(s.admit(4, ""), placement::waits_for_slot);
  EXPECT_EQ(s.finished(1), keys{2});
  // 3 waits for its jname, so 4 takes the next slot although it came later.
  EXPECT_EQ(s.finished(2), keys{4});
  EXPECT_EQ(s.finished(4), keys{3});
}

TEST(Scheduler, RoomAndMayWaitKeepToMaxWaiting) {
  scheduler s(1, 1);
  EXPECT_TRUE(s.room("a"));
  s.admit(1, "a");
  EXPECT_TRUE(s.room("a"));      // one may wait behind it
  EXPECT_FALSE(s.room("b"));     // no slot for a free jname
  EXPECT_TRUE(s.may_wait("b"));  // but it does not wait for a jname
  s.admit(2, "a");
  EXPECT_FALSE(s.room("a"));
  EXPECT_FALSE(s.may_wait("a"));
  EXPECT_TRUE(s.may_wait(""));
}

TEST(Scheduler, WithdrawFreesWhatTheJobHeldWhereverItWas) {
  scheduler s(1, 10);
  s.admit(1, "a");
  s.admit(2, "b");
  s.admit(3, "b");
  s.admit(4, "a");
  // Behind its jname: just gone.
  EXPECT_EQ(s.withdraw(4), keys{});
  EXPECT_EQ(s.waiting_for_jname(), 1u);
  // Waiting for a slot, holding jname b: 3 takes its place in the queue.
  EXPECT_EQ(s.withdraw(2), keys{});
  EXPECT_EQ(s.waiting_for_slot(), 1u);
  EXPECT_EQ(s.waiting_for_jname(), 0u);
  // Running: as finished.
  EXPECT_EQ(s.withdraw(1), keys{3});
  EXPECT_FALSE(s.busy("a"));
  EXPECT_EQ(s.withdraw(99), keys{}); // unknown
}

TEST(Scheduler, AfterStopNothingStarts) {
  scheduler s(1, 10);
  s.admit(1, "");
  s.admit(2, "");
  s.stop();
  EXPECT_EQ(s.finished(1), keys{});
  EXPECT_EQ(s.waiting_for_slot(), 1u);
  EXPECT_EQ(s.admit(3, ""), placement::waits_for_slot);
}

} // namespace

#include "bs_router/deferred_jobs.hpp"

namespace {

using bs_router::deferred_jobs;

TEST(DeferredJobs, EachJnameKeepsItsOrderAndTheJnamesTakeTurns) {
  deferred_jobs d(10);
  EXPECT_TRUE(d.remember("a", "1"));
  EXPECT_TRUE(d.remember("a", "2"));
  EXPECT_FALSE(d.remember("a", "1")); // back again: keeps its place
  EXPECT_TRUE(d.remember("b", "3"));
  EXPECT_EQ(d.size(), 3u);
  EXPECT_TRUE(d.contains("2"));
  auto any = [](const std::string&) { return true; };
  ASSERT_NE(d.next_turn(any), nullptr);
  EXPECT_EQ(*d.first("a"), "1");
  d.pop_first("a");
  // b's turn now, although a has more.
  const std::string* next = d.next_turn(any);
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(*next, "b");
  d.pop_first("b");
  EXPECT_FALSE(d.waiting("b"));
  EXPECT_EQ(*d.next_turn(any), "a");
  EXPECT_EQ(*d.first("a"), "2");
  // No room for a: nobody's turn.
  EXPECT_EQ(d.next_turn([](const std::string& j) { return j != "a"; }), nullptr);
}

TEST(DeferredJobs, FullAtItsBound) {
  deferred_jobs d(2);
  d.remember("a", "1");
  EXPECT_FALSE(d.full());
  d.remember("b", "2");
  EXPECT_TRUE(d.full());
  d.clear();
  EXPECT_EQ(d.size(), 0u);
  EXPECT_FALSE(d.full());
}

} // namespace

namespace {
TEST(Scheduler, WhereSaysWhereAJobIsNow) {
  bs_router::scheduler s(1, 10);
  s.admit(1, "a");
  s.admit(2, "a");
  s.admit(3, "b");
  EXPECT_EQ(s.where(1), placement::runs);
  EXPECT_EQ(s.where(2), placement::waits_for_jname);
  EXPECT_EQ(s.where(3), placement::waits_for_slot);
  s.finished(1); // 2 joins the queue for a slot, behind 3
  EXPECT_EQ(s.where(2), placement::waits_for_slot);
  EXPECT_EQ(s.where(3), placement::runs);
  EXPECT_EQ(s.where(1), std::nullopt);
}
} // namespace
