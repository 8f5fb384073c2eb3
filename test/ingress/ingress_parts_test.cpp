// The ingress's pure parts: the Authorization header and the token bucket.

#include <doctest/doctest.h>

#include "ingress/provider_ingress/http_front.h"
#include "ingress/provider_ingress/token_bucket.h"

using namespace unidesk::ingress;

TEST_CASE("bearer tokens") {
  std::string good = "udn_" + std::string(43, 'a');
  CHECK(ParseBearer("Bearer " + good, true).token == good);
  CHECK(ParseBearer("", false).error == "token_missing");
  CHECK(ParseBearer("", true).error == "token_missing");
  CHECK(ParseBearer("Basic abc", true).error == "token_malformed");
  CHECK(ParseBearer("Bearer " + good + "=", true).error == "token_malformed");
  CHECK(ParseBearer("Bearer udn_" + std::string(42, 'a') + "!", true).error == "token_malformed");
}

TEST_CASE("token bucket: burst, then the rate") {
  TokenBucket b(10, 5);
  auto t = TokenBucket::Clock::now();
  int taken = 0;
  for (int i = 0; i < 20; ++i) taken += b.Take(t);
  CHECK(taken == 5);
  CHECK(!b.Take(t + std::chrono::milliseconds(50)));
  CHECK(b.Take(t + std::chrono::milliseconds(150)));
}
