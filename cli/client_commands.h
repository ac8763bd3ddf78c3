// `bpnas` subcommands that talk to a coordinator over gRPC (SearchService) and `bpnas up`.
//
// The server address comes from --server, else BPNAS_SERVER, else 127.0.0.1:50051. Every call has a
// deadline (--timeout seconds, default 10; watch streams reconnect instead of timing out). An
// unreachable server is a one-line error and exit code 1, never a hang.
#ifndef BPNAS_CLI_CLIENT_COMMANDS_H_
#define BPNAS_CLI_CLIENT_COMMANDS_H_

namespace bpnas {

int CmdSubmit(int argc, char** argv);  // bpnas submit SPEC.json [--wait] [--json] [--request-id ID]
int CmdStatus(int argc, char** argv);  // bpnas status JOB [--json]
int CmdList(int argc, char** argv);    // bpnas list [--state S] [--limit N] [--json]
int CmdWatch(int argc, char** argv);   // bpnas watch JOB [--json]
int CmdCancel(int argc, char** argv);  // bpnas cancel JOB [--json]
int CmdFetch(int argc, char** argv);   // bpnas fetch JOB [-o MODEL.bpq] [--onnx MODEL.onnx] [--json]
int CmdUp(int argc, char** argv);      // bpnas up [--workers N] [--state DIR] [--db DSN] ...

}  // namespace bpnas

#endif  // BPNAS_CLI_CLIENT_COMMANDS_H_
