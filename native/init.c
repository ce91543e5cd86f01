// The addon's exports: the entry points of each concern, and the record sizes JavaScript checks its own
// layouts against (src/native/records.ts).
#include "dispatcher.h"
#include "napi_helpers.h"
#include "records.h"

#define FUNCTION(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      FUNCTION("listenInet", ListenInet),
      FUNCTION("listenSeqpacket", ListenSeqpacket),
      FUNCTION("connectSeqpacket", ConnectSeqpacket),
      FUNCTION("acceptBatch", AcceptBatch),
      FUNCTION("acceptUnix", AcceptUnix),
      FUNCTION("sendFd", SendFd),
      FUNCTION("sendConnections", SendConnections),
      FUNCTION("recvMsg", RecvMsg),
      FUNCTION("peerCred", PeerCred),
      FUNCTION("close", Close),
      FUNCTION("reset", Reset),
      FUNCTION("watch", Watch),
      FUNCTION("setEvents", SetEvents),
      FUNCTION("unwatch", Unwatch),
      FUNCTION("sockName", SockName),
      FUNCTION("recvDatagrams", RecvDatagrams),
      FUNCTION("sendDatagrams", SendDatagrams),
      FUNCTION("setBufferSizes", SetBufferSizes),
      FUNCTION("relay", Relay),
      FUNCTION("connectStream", ConnectStream),
      FUNCTION("notify", Notify),
      FUNCTION("inherited", Inherited),
      FUNCTION("pidfdGetfd", PidfdGetfd),
      FUNCTION("socketInfo", SocketInfo),
      FUNCTION("setTransparent", SetTransparent),
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  const struct {
    const char *name;
    int32_t value;
  } constants[] = {
      {"ACCEPT_RECORD", ACCEPT_RECORD}, {"MAX_FDS", MAX_FDS},       {"DATAGRAM_RECORD", DATAGRAM_RECORD},
      {"DATAGRAM_SLOT", DATAGRAM_SLOT}, {"SEND_RECORD", SEND_RECORD}, {"DATAGRAM_BATCH", DATAGRAM_BATCH},
  };
  for (size_t i = 0; i < sizeof constants / sizeof *constants; i++) {
    napi_value v;
    CHECK(napi_create_int32(env, constants[i].value, &v));
    CHECK(napi_set_named_property(env, exports, constants[i].name, v));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
