// The recovery table on its own: every journal state against every answer
// of the broker.
#include "bs_router/recovery.hpp"

#include <gtest/gtest.h>

namespace {

using namespace bs_router;

journal_entry in_state(journal_state state, bool replied = false) {
  journal_entry e;
  e.state = state;
  e.replied = replied;
  return e;
}

TEST(Recovery, AJobTheBrokerHoldsGoesOnFromWhereTheJournalLeftIt) {
  EXPECT_EQ(recovery_for(in_state(journal_state::accepted), broker_standing::held), recovery_step::run);
  EXPECT_EQ(recovery_for(in_state(journal_state::running), broker_standing::held), recovery_step::answer_interrupted);
  EXPECT_EQ(recovery_for(in_state(journal_state::finished), broker_standing::held), recovery_step::put_reply);
  EXPECT_EQ(recovery_for(in_state(journal_state::finished, true), broker_standing::held), recovery_step::remove);
}

TEST(Recovery, AJobTheBrokerDoesNotHoldIsDroppedWhateverTheJournalSays) {
  for (broker_standing standing : {broker_standing::not_held, broker_standing::gone})
    for (journal_state state : {journal_state::accepted, journal_state::running, journal_state::finished})
      for (bool replied : {false, true})
        EXPECT_EQ(recovery_for(in_state(state, replied), standing), recovery_step::drop)
            << to_string(state) << " replied=" << replied;
}

} // namespace
