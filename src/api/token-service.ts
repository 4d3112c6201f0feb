import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { INSTANCE_ADMIN, mayManageTeam, validTeam, type ApiTokens, type Principal, type TokenRecord } from "../auth/api-tokens.js";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError } from "../errors.js";
import { TokenSchema, TokenService, type Token } from "../gen/paddock/v1/token_pb.js";
import { principalOf } from "./auth.js";
import { decodePageToken, pageSize, paginate } from "./page-token.js";

/** Team admins manage their own team; the rest needs instance:admin, said in the refusal. */
function checkTeam(p: Principal, team: string, doing: string): void {
  if (mayManageTeam(p, team)) return;
  throw new PermissionDeniedError(
    `${doing} of team ${JSON.stringify(team)}: this token administers team ${JSON.stringify(p.team)} only; other teams need the scope ${INSTANCE_ADMIN}`,
  );
}

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

export function createTokenService(deps: { apiTokens: ApiTokens }): ServiceImpl<typeof TokenService> {
  return {
    createToken(req, ctx) {
      if (!req.team) throw new InvalidArgumentError("team", "is required");
      const p = principalOf(ctx);
      checkTeam(p, validTeam("team", req.team), "creating a token");
      if (req.scopes.includes(INSTANCE_ADMIN) && !p.scopes.has(INSTANCE_ADMIN)) {
        throw new PermissionDeniedError(`scopes: only a holder of ${INSTANCE_ADMIN} may grant ${INSTANCE_ADMIN}`);
      }
      const { record, secret } = deps.apiTokens.create(req.team, req.name, req.scopes);
      return { token: tokenToProto(record), secret };
    },
    listTokens(req, ctx) {
      const p = principalOf(ctx);
      if (req.team) checkTeam(p, validTeam("team", req.team), "listing the tokens");
      else if (!p.scopes.has(INSTANCE_ADMIN)) {
        throw new PermissionDeniedError(`listing every team's tokens needs the scope ${INSTANCE_ADMIN}; set team to ${JSON.stringify(p.team)} for this token's own`);
      }
      const size = pageSize(req.pageSize);
      const page = paginate(deps.apiTokens.list(req.team, decodePageToken(req.pageToken), size + 1), size, (t) => t.seq);
      return { tokens: page.items.map(tokenToProto), nextPageToken: page.nextPageToken };
    },
    revokeToken(req, ctx) {
      if (!req.tokenId) throw new InvalidArgumentError("token_id", "is required");
      const target = deps.apiTokens.get(req.tokenId);
      if (!target) throw new NotFoundError("token", req.tokenId);
      const p = principalOf(ctx);
      checkTeam(p, target.team, "revoking a token");
      // Else a team admin of "default" could lock the instance's admin out.
      if (target.scopes.includes(INSTANCE_ADMIN) && !p.scopes.has(INSTANCE_ADMIN)) {
        throw new PermissionDeniedError(`revoking a token with the scope ${INSTANCE_ADMIN} needs that scope`);
      }
      deps.apiTokens.revoke(req.tokenId);
      return { token: tokenToProto(deps.apiTokens.get(req.tokenId)!) };
    },
  };
}
