# Drops the gogoproto and google.api annotations from etcd's .proto files, so Debian's
# protoc compiles them without those imports (they only steer Go code and the HTTP
# gateway; the wire format is unchanged).
/^import "gogoproto\/gogo.proto";/ { next }
/^import "google\/api\/annotations.proto";/ { next }
/^option \(gogoproto\./ { next }
/option \(google\.api\.http\) = \{/ { skip = 1; next }
skip && /^[ \t]*\};/ { skip = 0; next }
skip { next }
{ gsub(/ *\[\(gogoproto\.[^\]]*\]/, ""); print }
