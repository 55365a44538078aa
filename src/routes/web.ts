// Demo and operator pages (placeholder).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Config } from '../config';

const webRoutes: FastifyPluginAsyncTypebox<{ config: Config; sdkApiUrl: () => string }> = async () => {};
export default webRoutes;
