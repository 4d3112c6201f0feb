import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { validTeam, type ApiTokens } from "../auth/api-tokens.js";
import { InvalidArgumentError, NotFoundError } from "../errors.js";
import { TokenSchema, TokenService, type Token } from "../gen/paddock/v1/token_pb.js";
import type { TokenRecord, TokensRepository } from "../store/tokens-repository.js";
import { decodePageToken, pageSize, paginate } from "./page-token.js";

/** Never the secret or its hash: a token's public face. */
function tokenToProto(t: TokenRecord): Token {
  return create(TokenSchema, {
    id: t.id,
    team: t.team,
    name: t.name,
    scopes: t.scopes,
    createTime: timestampFromMs(t.createdAt),
    revokeTime: t.revokedAt === null ? undefined : timestampFromMs(t.revokedAt),
    lastUsedTime: t.lastUsedAt === null ? undefined : timestampFromMs(t.lastUsedAt),
  });
}

export function createTokenService(deps: { tokens: TokensRepository; apiTokens: ApiTokens }): ServiceImpl<typeof TokenService> {
  return {
    createToken(req) {
      if (!req.team) throw new InvalidArgumentError("team", "is required");
      const { record, secret } = deps.apiTokens.create(req.team, req.name, req.scopes);
      return { token: tokenToProto(record), secret };
    },
    listTokens(req) {
      if (req.team) validTeam("team", req.team);
      const size = pageSize(req.pageSize);
      const page = paginate(deps.tokens.list(req.team, decodePageToken(req.pageToken), size + 1), size, (t) => t.seq);
      return { tokens: page.items.map(tokenToProto), nextPageToken: page.nextPageToken };
    },
    revokeToken(req) {
      if (!req.tokenId) throw new InvalidArgumentError("token_id", "is required");
      if (!deps.tokens.get(req.tokenId)) throw new NotFoundError("token", req.tokenId);
      deps.tokens.revoke(req.tokenId, Date.now());
      return { token: tokenToProto(deps.tokens.get(req.tokenId)!) };
    },
  };
}
