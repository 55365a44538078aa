// POST /onboardings: the server-side flow (placeholder until the orchestrator lands).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Config } from '../config';
import type { SessionGuards } from '../protection/session-guards';

const onboardingsRoutes: FastifyPluginAsyncTypebox<{ config: Config; guards: SessionGuards }> = async () => {};
export default onboardingsRoutes;
