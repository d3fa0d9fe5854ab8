#include "bs_router/job_policy.hpp"

#include "bs_router/reply.hpp"

#include <chrono>
#include <cstdio>
#include <set>
#include <string>

#include <gtest/gtest.h>

using namespace bs_router;

namespace {

job_request job_of(std::string_view body) {
  auto result = decode_job(body);
  EXPECT_TRUE(result.job) << result.error;
  return result.job.value_or(job_request{});
}

job_policy allowing(std::set<std::string, std::less<>> commands) {
  job_policy policy;
  policy.commands = std::move(commands);
  return policy;
}

} // namespace

TEST(JobPolicy, EveryCommandWithoutLists) {
  EXPECT_FALSE(check_job(job_of(R"({"Command":"jexec","CommandArgs":{"jname":"j1","cmd":"id"}})"), {}));
}

TEST(JobPolicy, OnlyTheCommandsListed) {
  const job_policy policy = allowing({"jstart", "jstop"});
  EXPECT_FALSE(check_job(job_of(R"({"Command":"jstart","CommandArgs":{"jname":"j1"}})"), policy));
  auto refusal = check_job(job_of(R"({"Command":"jexec","CommandArgs":{"jname":"j1"}})"), policy);
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->err_code, router_errcode::not_allowed);
  EXPECT_EQ(refusal->reason, "command \"jexec\" is not allowed on this pool (not in commands)");
  EXPECT_EQ(refusal->message(), "bs_router: command \"jexec\" is not allowed on this pool (not in commands)");
  // Names are compared exactly.
  EXPECT_TRUE(check_job(job_of(R"({"Command":"JSTART"})"), policy));
  EXPECT_TRUE(check_job(job_of(R"({"Command":"jstar"})"), policy));
  EXPECT_TRUE(check_job(job_of(R"({"Command":"jls"})"), allowing({})));
}

TEST(JobPolicy, DeniedCommands) {
  job_policy policy;
  policy.deny_commands = {"jexec", "initenv"};
  auto refusal = check_job(job_of(R"({"Command":"initenv"})"), policy);
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->err_code, router_errcode::not_allowed);
  EXPECT_EQ(refusal->reason, "command \"initenv\" is not allowed on this pool (deny_commands)");
  EXPECT_FALSE(check_job(job_of(R"({"Command":"jstart"})"), policy));
  // With both lists, a command must be in the one and not in the other.
  policy.commands = std::set<std::string, std::less<>>{"jstart"};
  EXPECT_FALSE(check_job(job_of(R"({"Command":"jstart"})"), policy));
  EXPECT_TRUE(check_job(job_of(R"({"Command":"jexec"})"), policy));
  EXPECT_TRUE(check_job(job_of(R"({"Command":"jls"})"), policy));
}

TEST(JobPolicy, EvaluatedCharacters) {
  EXPECT_EQ(find_evaluated_char("plain value; with \"quotes\" 'and' spaces | & > <"), std::string::npos);
  EXPECT_EQ(find_evaluated_char("a$b"), 1u);
  EXPECT_EQ(find_evaluated_char("`id`"), 0u);
  EXPECT_EQ(find_evaluated_char("c:\\dir"), 2u);
  EXPECT_EQ(find_evaluated_char(""), std::string::npos);
}

TEST(JobPolicy, ValuesCbsdWouldEvaluateAreBadInputNamingTheKeyAndWhy) {
  struct example {
    const char* body;
    const char* reason;
  };
  const example examples[] = {
      {R"j({"Command":"jexec","CommandArgs":{"jname":"j1","cmd":"$(reboot)"}})j",
       "CommandArgs.cmd: the value has '$' (a parameter or $(...) command substitution), which cbsd evaluates as "
       "root when it reads its arguments; not allowed (see allow_unsafe_values)"},
      {R"({"Command":"jstart","CommandArgs":{"jname":"`id`"}})",
       "CommandArgs.jname: the value has '`' (a command substitution), which cbsd evaluates as root when it reads "
       "its arguments; not allowed (see allow_unsafe_values)"},
      {R"({"Command":"jstart","CommandArgs":{"jname":"j1","comment":"a\\b"}})",
       "CommandArgs.comment: the value has '\\' (an escape), which cbsd evaluates as root when it reads its "
       "arguments; not allowed (see allow_unsafe_values)"},
  };
  for (const example& e : examples) {
    auto refusal = check_job(job_of(e.body), {});
    ASSERT_TRUE(refusal) << e.body;
    EXPECT_EQ(refusal->err_code, router_errcode::bad_input) << e.body;
    EXPECT_EQ(refusal->reason, e.reason);
    EXPECT_EQ(refusal->message(), std::string("bs_router: bad job: ") + e.reason);
  }
}

TEST(JobPolicy, NotAllowedComesBeforeBadValues) {
  auto refusal = check_job(job_of(R"({"Command":"jexec","CommandArgs":{"cmd":"$x"}})"), allowing({"jls"}));
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->err_code, router_errcode::not_allowed);
}

TEST(JobPolicy, OptOutForEveryKeyOrForTheKeysListed) {
  const job_request job = job_of(R"j({"Command":"jexec","CommandArgs":{"jname":"`j`","cmd":"$(id)","x":"a\\b"}})j");
  job_policy everywhere;
  everywhere.unsafe_values_everywhere = true;
  EXPECT_FALSE(check_job(job, everywhere));

  job_policy listed;
  listed.unsafe_value_keys = {"cmd", "jname"};
  auto refusal = check_job(job, listed);
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->err_code, router_errcode::bad_input);
  EXPECT_EQ(refusal->reason.rfind("CommandArgs.x: ", 0), 0u) << refusal->reason;
  listed.unsafe_value_keys.insert("x");
  EXPECT_FALSE(check_job(job, listed));
}

// The cost of the checks on a job of 16 arguments, beside that of decoding
// its body (printed, not asserted).
TEST(JobPolicy, CostPerJob) {
  const std::string body =
      R"({"Command":"bcreate","CommandArgs":{"jname":"vm1","vm_os_type":"freebsd","vm_os_profile":"cloud-FreeBSD-ufs-x64-14.1",)"
      R"("imgsize":"10g","vm_ram":"1g","vm_cpus":"1","ci_ip4_addr":"10.0.0.20/24","ci_gw4":"10.0.0.1","a1":"1","a2":"2",)"
      R"("a3":"3","a4":"4","a5":"5","a6":"6","a7":"7","comment":"a longer value of some forty characters...."}})";
  const job_request job = job_of(body);
  const job_policy policy = allowing({"bcreate", "bstart", "bstop", "bremove", "bget", "bls", "jcreate", "jstart",
                                      "jstop", "jremove", "jget", "jls"});
  constexpr int rounds = 200000;
  int refused = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) refused += check_job(job, policy) ? 1 : 0;
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(refused, 0);
  constexpr int decode_rounds = 20000;
  std::size_t decoded = 0;
  const auto decode_start = std::chrono::steady_clock::now();
  for (int i = 0; i < decode_rounds; ++i) decoded += decode_job(body).job ? 1 : 0;
  const auto decode_elapsed = std::chrono::steady_clock::now() - decode_start;
  EXPECT_EQ(decoded, static_cast<std::size_t>(decode_rounds));
  std::printf("check_job: %.1f ns per job of %zu arguments; decode_job of its body: %.1f ns\n",
              std::chrono::duration<double, std::nano>(elapsed).count() / rounds, job.args.size(),
              std::chrono::duration<double, std::nano>(decode_elapsed).count() / decode_rounds);
}
