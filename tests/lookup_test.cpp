#include "bs_router/lookup.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

using namespace bs_router;
using args = std::vector<std::string>;

namespace {

job_request job_of(std::string_view body) {
  auto result = decode_job(body);
  EXPECT_TRUE(result.job) << result.error;
  return result.job.value_or(job_request{});
}

} // namespace

TEST(Lookup, GetCommandDependsOnTheEmulator) {
  EXPECT_EQ(get_command_for(std::string("jail")), "jget");
  EXPECT_EQ(get_command_for(std::string("qemu")), "qget");
  EXPECT_EQ(get_command_for(std::string("xen")), "xget");
  EXPECT_EQ(get_command_for(std::string("bhyve")), "bget");
  EXPECT_EQ(get_command_for(std::string("")), "bget");
  EXPECT_EQ(get_command_for(std::string("Jail")), "bget");
  EXPECT_EQ(get_command_for(std::nullopt), "bget");
}

TEST(Lookup, NothingWithoutJname) {
  EXPECT_TRUE(lookups_for(job_of(R"({"Command":"jls"})")).empty());
  EXPECT_TRUE(lookups_for(job_of(R"({"Command":"bstart","CommandArgs":{"emulator":"bhyve"}})")).empty());
}

TEST(Lookup, GuidAndDskGuidForAJob) {
  auto lookups = lookups_for(job_of(R"({"Command":"jstart","CommandArgs":{"jname":"jail1","emulator":"jail"}})"));
  ASSERT_EQ(lookups.size(), 2u);
  EXPECT_EQ(lookups[0].field, lookup_field::guid);
  EXPECT_EQ(lookups[0].args, (args{"jget", "jname=jail1", "mode=quiet", "vm_zfs_guid"}));
  EXPECT_EQ(lookups[1].field, lookup_field::dsk_guid);
  EXPECT_EQ(lookups[1].args, (args{"bhyve-dsk", "mode=get", "jname=jail1", "dsk_path=dsk1", "dsk_zfs_guid"}));
}

TEST(Lookup, GuidUsesTheEmulatorsGetCommand) {
  auto guid_args = [](const char* body) { return lookups_for(job_of(body)).at(0).args.at(0); };
  EXPECT_EQ(guid_args(R"({"Command":"bcreate","CommandArgs":{"jname":"vm1"}})"), "bget");
  EXPECT_EQ(guid_args(R"({"Command":"bcreate","CommandArgs":{"jname":"vm1","emulator":"bhyve"}})"), "bget");
  EXPECT_EQ(guid_args(R"({"Command":"qcreate","CommandArgs":{"jname":"vm1","emulator":"qemu"}})"), "qget");
  EXPECT_EQ(guid_args(R"({"Command":"xcreate","CommandArgs":{"jname":"vm1","emulator":"xen"}})"), "xget");
}

TEST(Lookup, BstartAlsoAsksForTheVncBindAndPort) {
  auto lookups = lookups_for(job_of(R"({"Command":"bstart","CommandArgs":{"jname":"vm1"}})"));
  ASSERT_EQ(lookups.size(), 4u);
  EXPECT_EQ(lookups[0].args, (args{"bget", "jname=vm1", "mode=quiet", "vm_zfs_guid"}));
  EXPECT_EQ(lookups[1].args, (args{"bhyve-dsk", "mode=get", "jname=vm1", "dsk_path=dsk1", "dsk_zfs_guid"}));
  EXPECT_EQ(lookups[2].field, lookup_field::vnc_bind);
  EXPECT_EQ(lookups[2].args, (args{"bget", "jname=vm1", "mode=quiet", "bhyve_vnc_tcp_bind"}));
  EXPECT_EQ(lookups[3].field, lookup_field::vnc_port);
  EXPECT_EQ(lookups[3].args, (args{"bget", "jname=vm1", "mode=quiet", "vnc_port"}));
}

TEST(Lookup, JnameWithOddCharactersStaysOneArgument) {
  auto lookups = lookups_for(job_of(R"({"Command":"bstart","CommandArgs":{"jname":"a b; reboot"}})"));
  ASSERT_EQ(lookups.size(), 4u);
  for (const auto& l : lookups) EXPECT_NE(std::find(l.args.begin(), l.args.end(), "jname=a b; reboot"), l.args.end());
}

TEST(Lookup, PrintedValueIsOneNonEmptyLine) {
  EXPECT_EQ(printed_value(0, "abc\n"), "abc");
  EXPECT_EQ(printed_value(0, "abc"), "abc");
  EXPECT_EQ(printed_value(0, "abc\r\n"), "abc");
  EXPECT_EQ(printed_value(0, "12345678901234567890\n"), "12345678901234567890");
  EXPECT_EQ(printed_value(0, "0.0.0.0\n"), "0.0.0.0");
  EXPECT_EQ(printed_value(0, " spaced value \n"), " spaced value ");
}

TEST(Lookup, NoValueForEmptyOutput) {
  EXPECT_EQ(printed_value(0, ""), std::nullopt);
  EXPECT_EQ(printed_value(0, "\n"), std::nullopt);
  EXPECT_EQ(printed_value(0, "\r\n"), std::nullopt);
}

TEST(Lookup, NoValueForSeveralLines) {
  // What bget prints for a key it does not know: every setting.
  EXPECT_EQ(printed_value(0, "jname: vm1\nvm_ram: 1g\nvm_cpus: 1\nvnc_port: 5900\n"), std::nullopt);
  EXPECT_EQ(printed_value(0, "abc\n\n"), std::nullopt); // only one trailing newline is trimmed
  EXPECT_EQ(printed_value(0, "\nabc"), std::nullopt);
  EXPECT_EQ(printed_value(0, "a\nb"), std::nullopt);
}

TEST(Lookup, NoValueWhenTheLookupFailed) {
  EXPECT_EQ(printed_value(1, "abc\n"), std::nullopt);
  EXPECT_EQ(printed_value(-1, "abc\n"), std::nullopt);
  EXPECT_EQ(printed_value(255, ""), std::nullopt);
}

TEST(Lookup, VncAddressNeedsBothParts) {
  EXPECT_EQ(vnc_address(std::string("127.0.0.1"), std::string("5900")), "127.0.0.1:5900");
  EXPECT_EQ(vnc_address(std::nullopt, std::string("5900")), "");
  EXPECT_EQ(vnc_address(std::string("127.0.0.1"), std::nullopt), "");
  EXPECT_EQ(vnc_address(std::nullopt, std::nullopt), "");
}

// cbsd would evaluate $ ` \ in the jname: the look-ups never hand it on, even
// when the config let the job itself run with it.
TEST(Lookup, NothingForAJnameCbsdWouldEvaluate) {
  for (const char* body : {R"j({"Command":"bstart","CommandArgs":{"jname":"$(reboot)"}})j",
                           R"({"Command":"bstart","CommandArgs":{"jname":"`id`"}})",
                           R"({"Command":"bstart","CommandArgs":{"jname":"vm\\1"}})",
                           R"({"Command":"jstart","CommandArgs":{"jname":"a$b","emulator":"jail"}})"})
    EXPECT_TRUE(lookups_for(job_of(body)).empty()) << body;
  EXPECT_EQ(lookups_for(job_of(R"({"Command":"bstart","CommandArgs":{"jname":"vm1","x":"$y"}})")).size(), 4u);
}
